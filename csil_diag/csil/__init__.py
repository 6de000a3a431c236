"""CSIL: BC pre-training of the HetStat (and, later, coherent reward, critic pre-training, SAC)."""
