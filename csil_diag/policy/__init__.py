"""HetStat policy: MLP → stationary random features → Bayesian linear head, tanh-squashed."""
