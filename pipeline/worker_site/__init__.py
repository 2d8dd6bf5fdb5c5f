"""Not imported as a package: this folder goes first on the PYTHONPATH of a
launcher's local worker processes (pipeline/logs.py), for sitecustomize.py."""
