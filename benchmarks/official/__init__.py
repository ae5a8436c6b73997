"""Side-by-side harness: the official facebookresearch/luckmatters scripts run from a user's
checkout (nothing of them is copied here), their per-epoch correlations written as our tables."""
