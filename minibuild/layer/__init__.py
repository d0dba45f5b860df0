"""Layers: content-addressed tar diffs with chain IDs and reference counts (moby layer/)."""

from minibuild.layer.store import Layer, LayerDoesNotExist, LayerError, LayerStore, chain_id_of

__all__ = ["Layer", "LayerDoesNotExist", "LayerError", "LayerStore", "chain_id_of"]
