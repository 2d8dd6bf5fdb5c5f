"""Job templates for `ev-predict submit` (shipped as package data)."""
