"""YAML recipes, shipped inside the wheel as package data (``minmo_lightning.recipes``)."""
