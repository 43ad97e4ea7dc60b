"""Regularized (aging) evolution (Real et al. 2019) as a stateless Optuna sampler.

The population is the `population` most recently finished candidates of the study; each new
candidate is the best of `sample_size` members drawn at random, with one decision mutated. Until the
study has `population` finished candidates, candidates are drawn at random (the initial population).
Everything is read from the study's trials and each trial's randomness comes from (seed, trial
number), so any number of workers can share a study and a resumed search needs no saved state.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from effnetx_jax.errors import UserError
from effnetx_jax.studies.search.space import SearchSpace


def population_of(trials: list[FrozenTrial], size: int) -> list[FrozenTrial]:
    """The `size` youngest finished trials: a trial leaves the population when `size` newer ones finish."""
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    finished.sort(key=lambda t: (t.datetime_complete, t.number))
    return finished[-size:]


def tournament(population: list[FrozenTrial], sample_size: int, rng: np.random.Generator) -> FrozenTrial:
    """The best of `sample_size` members drawn without replacement."""
    picks = rng.choice(len(population), size=min(sample_size, len(population)), replace=False)
    return max((population[i] for i in picks), key=lambda t: (t.value, -t.number))


class AgingEvolutionSampler(optuna.samplers.BaseSampler):
    def __init__(self, space: SearchSpace, population: int, sample_size: int, seed: int = 0):
        if not 1 <= sample_size <= population:
            raise UserError(f"need 1 <= sample_size <= population, got {sample_size} and {population}")
        self._space = space
        self._population = population
        self._sample_size = sample_size
        self._seed = seed

    def infer_relative_search_space(self, study, trial) -> dict[str, CategoricalDistribution]:
        return {name: CategoricalDistribution(choices) for name, choices in self._space.decisions().items()}

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        rng = np.random.default_rng([self._seed, trial.number])
        population = population_of(study.get_trials(deepcopy=False), self._population)
        if len(population) < self._population:
            return self._space.random(rng)
        parent = tournament(population, self._sample_size, rng)
        return self._space.mutate({name: parent.params[name] for name in search_space}, rng)

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only reached for a decision outside the space (never by the search's own trials).
        rng = np.random.default_rng([self._seed, trial.number, len(param_name)])
        return param_distribution.choices[rng.integers(len(param_distribution.choices))]
