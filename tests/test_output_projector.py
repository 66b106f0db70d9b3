"""QueryLinearProjector: MinMo §3.2 input construction (shapes, order, features), ablations, errors."""

from __future__ import annotations

import pytest
import torch
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector

from minmo_lightning.contracts import VoiceDecoderInput
from minmo_lightning.registry import count_preset_parameters

D = 8


def inputs(batch: int = 2, rows: int = 1, tokens: int = 5) -> VoiceDecoderInput:
    return VoiceDecoderInput(
        query=torch.randn(batch, rows, 2 * D),
        token_embeddings=torch.randn(batch, tokens, D),
        token_hidden=torch.randn(batch, tokens, D),
        lengths=torch.tensor([tokens, tokens - 2][:batch]),
    )


def test_query_then_tokens_on_the_sequence_axis() -> None:
    proj = QueryLinearProjector(D, 6)
    x = inputs(rows=2)
    out = proj(x)
    assert out.values.shape == (2, 2 + 5, 6) and out.lengths.tolist() == [7, 5]
    assert proj.query_length(x) == 2
    # rows 0..1: query (already [embedding ; hidden] per user-turn position); rows 2..: the same per token
    expected = torch.cat([x.query, torch.cat([x.token_embeddings, x.token_hidden], -1)], 1)
    torch.testing.assert_close(out.values, proj.proj(expected))


@pytest.mark.parametrize("features", ["hidden", "embedding"])
def test_feature_ablations_read_one_half(features: str) -> None:
    proj = QueryLinearProjector(D, 6, features=features)
    x = inputs()
    keep = slice(D, 2 * D) if features == "hidden" else slice(0, D)
    rows = torch.cat([x.query, torch.cat([x.token_embeddings, x.token_hidden], -1)], 1)
    torch.testing.assert_close(proj(x).values, proj.proj(rows[..., keep]))
    both = QueryLinearProjector(D, 6)
    assert sum(p.numel() for p in proj.parameters()) == D * 6 + 6  # half the weight, counted as such
    assert sum(p.numel() for p in both.parameters()) == 2 * D * 6 + 6


def test_no_query_ablation() -> None:
    proj = QueryLinearProjector(D, 6, query="none")
    x = inputs(rows=3)
    out = proj(x)
    assert out.values.shape == (2, 5, 6) and out.lengths.tolist() == [5, 3] and proj.query_length(x) == 0
    torch.testing.assert_close(out.values, proj.proj(torch.cat([x.token_embeddings, x.token_hidden], -1)))
    query, _ = proj.split(x, out)
    assert query.values.shape[1] == 0 and query.lengths.tolist() == [0, 0]


def test_query_rows_per_position_keep_each_rows_own_count() -> None:
    """Rows whose user turns differ in length: split hands the voice LM each row's own query rows."""
    proj = QueryLinearProjector(D, 6)
    x = inputs(rows=4)
    x.query_lengths = torch.tensor([4, 2])
    query, semantic = proj.split(x, proj(x))
    assert query.values.shape == (2, 4, 6) and query.lengths.tolist() == [4, 2]
    torch.testing.assert_close(query.values, proj.proj(x.query))
    assert semantic.values.shape == (2, 5, 6) and semantic.lengths.tolist() == [5, 3]


def test_pooled_query_ablation_is_mean_embedding_and_last_hidden() -> None:
    proj = QueryLinearProjector(D, 6, query="pooled")
    x = inputs(rows=4)
    x.query_lengths = torch.tensor([4, 2])
    query, _ = proj.split(x, proj(x))
    assert query.values.shape == (2, 1, 6) and query.lengths.tolist() == [1, 1]
    for row, n in enumerate((4, 2)):
        pooled = torch.cat([x.query[row, :n, :D].mean(0), x.query[row, n - 1, D:]])
        torch.testing.assert_close(query.values[row, 0], proj.proj(pooled))


def test_streaming_chunks_equal_one_pass() -> None:
    """A turn projected at once equals the query alone followed by 5-token chunks (what streaming does)."""
    proj = QueryLinearProjector(D, 6)
    x = inputs(batch=1, tokens=10)
    x.lengths = torch.tensor([10])
    whole = proj(x).values
    query_only = proj(
        VoiceDecoderInput(x.query, x.token_embeddings[:, :0], x.token_hidden[:, :0], torch.tensor([0]))
    )
    no_query = x.query[:, :0]
    chunks = [
        proj(
            VoiceDecoderInput(
                no_query, x.token_embeddings[:, i : i + 5], x.token_hidden[:, i : i + 5], torch.tensor([5])
            )
        )
        for i in (0, 5)
    ]
    torch.testing.assert_close(whole, torch.cat([query_only.values] + [c.values for c in chunks], 1))


def test_full_size_is_about_six_million() -> None:
    assert count_preset_parameters(QueryLinearProjector, "minmo") == 7168 * 896 + 896


def test_errors() -> None:
    with pytest.raises(ValueError, match="features"):
        QueryLinearProjector(D, 6, features="both_and_more")
    with pytest.raises(ValueError, match="query must be one of positions, pooled, none"):
        QueryLinearProjector(D, 6, query="mean")
    proj = QueryLinearProjector(D, 6)
    x = inputs()
    with pytest.raises(ValueError, match="query_lengths"):
        proj(VoiceDecoderInput(x.query, x.token_embeddings, x.token_hidden, x.lengths, torch.tensor([2, 0])))
    with pytest.raises(ValueError, match="query must be"):
        proj(VoiceDecoderInput(x.query[..., :D], x.token_embeddings, x.token_hidden, x.lengths))
    with pytest.raises(ValueError, match="token_embeddings and token_hidden"):
        proj(VoiceDecoderInput(x.query, x.token_embeddings, x.token_hidden[..., :4], x.lengths))
    with pytest.raises(ValueError, match="lengths"):
        proj(VoiceDecoderInput(x.query, x.token_embeddings, x.token_hidden, torch.tensor([6, 1])))


def test_low_precision_llm_states_meet_an_fp32_projector() -> None:
    from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector

    from minmo_lightning.contracts import VoiceDecoderInput

    projector = QueryLinearProjector.from_preset("tiny")
    d = projector.llm_hidden_size
    inputs = VoiceDecoderInput(
        torch.randn(2, 1, 2 * d).bfloat16(),
        torch.randn(2, 3, d).bfloat16(),
        torch.randn(2, 3, d).bfloat16(),
        torch.tensor([3, 2]),
    )
    out = projector(inputs)
    assert out.values.dtype == torch.float32 and out.values.shape == (2, 4, projector.output_dim)


def test_a_checkpoint_from_before_the_per_position_query_loads_as_it_was_trained(tmp_path) -> None:
    """``use_query: true`` meant one pooled row: such a checkpoint rebuilds with ``query: pooled``."""
    import lightning as L

    proj = QueryLinearProjector(D, 6, query="pooled")
    trainer = L.Trainer(max_steps=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(proj)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["hyper_parameters"]["query"]
    checkpoint["hyper_parameters"]["use_query"] = True
    torch.save(checkpoint, path)
    restored = QueryLinearProjector.load_from_checkpoint(path)
    assert restored.query == "pooled" and torch.equal(restored.proj.weight, proj.proj.weight)
    assert QueryLinearProjector.restore_args({"use_query": False}, {}) == {"query": "none"}
