"""Beam stages of ev-predict: one module per stage, each a pure function with a thin wrapper."""
