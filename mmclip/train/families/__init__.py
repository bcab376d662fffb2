"""Model families of the training loop: one module each, found by the name a stage YAML gives in
``family:``. The table names modules, so a stage imports only its own family (LUSIFER's pulls in
peft and transformers' Mistral)."""

from __future__ import annotations

import importlib

FAMILIES = {"clip": "clip:CLIPFamily", "lusifer": "lusifer:LusiferFamily"}


def family_class(name: str):
    """The :class:`~.base.ModelFamily` subclass registered as ``name``."""
    module, _, cls = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)
