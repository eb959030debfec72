"""Policies that choose the exit and the partition per request (simulator, baselines, TF-Agents)."""
