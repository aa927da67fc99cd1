"""Live robustness probes: perturb inputs, run them through served models, report statistics.

- `plan`: request -> checked specs, inputs with languages and scripts, perturbed samples
- `language`: language identification for inputs sent without `lang`
- `scoring`: one model's no-ops (by token ids) and predictions, placed back on the plan
- `assemble` / `compare`: the statistics of one model / two models, as response bodies
- `run`: the async part that calls models in batches and publishes metrics
"""
