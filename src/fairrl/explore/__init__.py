"""``fairrl explore``: Optuna search over data mixture x method x hyperparameters (FairReason explorer)."""
