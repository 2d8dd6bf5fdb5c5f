"""ev-predict's benchmarks, run from the repository root:
``python -m bench.run`` (throughput against the ceilings and baselines),
``python -m bench.oss_latency`` (storage latency), ``python -m
bench.bf16_agreement`` (OpenVINO bf16 against f32). Results quoted in the
docs are in bench/results/."""
