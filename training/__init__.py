"""STILTs training pipeline, base-model conversion and the offline demo model builder."""
