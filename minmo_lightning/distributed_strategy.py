"""``FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` with FSDP2 over every process, whatever the launch.

``ModelParallelStrategy`` builds a 2-D mesh whose ``"auto"`` sizes are data-parallel = nodes and
tensor-parallel = GPUs per node. MinMo has no tensor-parallel plan, so a recipe would have to spell
``data_parallel_size`` = devices x num_nodes and change it with every launch (one node of 8, two nodes of 8, a
CPU test at 2). This subclass fixes only that choice: every process is one data-parallel rank and
``tensor_parallel_size`` is 1. Processes, the mesh, sharding (``MinMo.configure_model``, ``sharding.py``) and
distributed checkpoints are Lightning's and PyTorch's own.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 only: ``data_parallel_size`` = world size, ``tensor_parallel_size`` = 1.

    ``save_distributed_checkpoint`` (default) writes a checkpoint as a folder with one shard per rank
    (``torch.distributed.checkpoint``), which resumes at any world size and ``minmo export`` consolidates.
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
