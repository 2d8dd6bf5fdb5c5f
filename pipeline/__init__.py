"""ev-predict pipeline: options, graph and command line (no image or model logic)."""
