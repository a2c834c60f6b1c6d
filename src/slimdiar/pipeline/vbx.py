"""VBx: Bayesian HMM clustering of x-vectors (Landini et al., 2022) with a PLDA model.

Two parts, both numpy/scipy on float64:

- :class:`PLDA` holds the x-vector transform (centring, length normalisation, LDA) and the
  two-covariance PLDA read from a directory with ``xvec_transform.npz`` (``mean1``, ``mean2``,
  ``lda``) and ``plda.npz`` (``mu``, ``tr``, ``psi``). It maps raw speaker embeddings into the
  PLDA space, where the within-speaker covariance is the identity and the across-speaker
  covariance is ``diag(psi)`` with ``psi`` sorted in decreasing order.
- :func:`vbx` runs the variational Bayes iterations from an initial hard clustering and
  returns the posterior of every embedding over the speakers and the speaker priors; speakers
  whose prior collapses to (near) zero are the ones VBx removes.

Notation follows the paper: ``Fa`` scales the sufficient statistics, ``Fb`` regularises the
speaker models (a larger value gives fewer speakers), ``loop_probability`` is the HMM's
probability of staying with the same speaker between consecutive embeddings (0: a plain
mixture model, the embeddings are exchangeable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import eigh
from scipy.special import logsumexp, softmax

from slimdiar.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

TRANSFORM_NAME = "xvec_transform.npz"
PLDA_NAME = "plda.npz"


def _length_normalize(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _read_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such file (a PLDA directory holds {TRANSFORM_NAME} and {PLDA_NAME})"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise CheckpointError(
                    f"{path}: missing array{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (holds {', '.join(data.files) or 'nothing'})"
                )
            return {n: np.asarray(data[n], dtype=np.float64) for n in names}
    except (OSError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable .npz file ({error})") from None


@dataclass(frozen=True)
class PLDA:
    """x-vector transform and PLDA model, in the form VBx uses.

    Parameters
    ----------
    mean1
        ``(embedding_dim,)`` mean subtracted from raw embeddings.
    lda
        ``(embedding_dim, lda_dim)`` LDA projection.
    mean2
        ``(lda_dim,)`` mean subtracted after the projection.
    mu
        ``(lda_dim,)`` PLDA mean.
    transform
        ``(lda_dim, lda_dim)`` rows map a centred x-vector to the PLDA space, ordered by
        decreasing across-speaker variance.
    psi
        ``(lda_dim,)`` across-speaker variances in the PLDA space, decreasing.
    """

    mean1: np.ndarray
    lda: np.ndarray
    mean2: np.ndarray
    mu: np.ndarray
    transform: np.ndarray
    psi: np.ndarray

    @property
    def dimension(self) -> int:
        """Dimension of the PLDA space."""
        return len(self.psi)

    @classmethod
    def load(cls, directory: str | Path) -> PLDA:
        """Read ``xvec_transform.npz`` and ``plda.npz`` from ``directory``.

        The stored ``psi`` and the rows of ``tr`` may be in any order: the model is rebuilt from
        its within-speaker ``W = (trᵀ tr)⁻¹`` and across-speaker ``B = (trᵀ diag(1/psi) tr)⁻¹``
        covariances by the generalised eigenproblem ``B v = λ W v``, sorted by decreasing λ.

        Raises
        ------
        CheckpointError
            If a file or an array is missing, unreadable, or the shapes do not fit together.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: no such PLDA directory")
        x = _read_arrays(directory / TRANSFORM_NAME, ("mean1", "mean2", "lda"))
        p = _read_arrays(directory / PLDA_NAME, ("mu", "tr", "psi"))
        lda = x["lda"]
        if lda.ndim != 2:
            raise CheckpointError(
                f"{directory / TRANSFORM_NAME}: lda must be 2-D, got shape {lda.shape}"
            )
        dim_in, dim = lda.shape
        expected = {
            "mean1": (dim_in,),
            "mean2": (dim,),
            "mu": (dim,),
            "tr": (dim, dim),
            "psi": (dim,),
        }
        for name, shape in expected.items():
            array = x[name] if name in x else p[name]
            if array.shape != shape:
                raise CheckpointError(
                    f"{directory}: {name} has shape {array.shape}, expected {shape} for an lda "
                    f"of shape {lda.shape}"
                )
        tr, psi = p["tr"], p["psi"]
        if not np.all(psi > 0):
            raise CheckpointError(f"{directory / PLDA_NAME}: psi must be positive")
        within = np.linalg.inv(tr.T @ tr)
        across = np.linalg.inv((tr.T / psi) @ tr)
        variances, vectors = eigh(across, within)
        return cls(x["mean1"], lda, x["mean2"], p["mu"], vectors.T[::-1], variances[::-1])

    def xvector_transform(self, embeddings: np.ndarray) -> np.ndarray:
        """Centre, length-normalise (to norm √D), project with LDA, centre, length-normalise.

        Parameters
        ----------
        embeddings
            ``(num_embeddings, embedding_dim)`` raw embeddings.

        Returns
        -------
        numpy.ndarray
            ``(num_embeddings, lda_dim)`` float64, each of norm √lda_dim.
        """
        dim_in, dim = self.lda.shape
        x = np.sqrt(dim_in) * _length_normalize(np.asarray(embeddings, np.float64) - self.mean1)
        return np.sqrt(dim) * _length_normalize(x @ self.lda - self.mean2)

    def plda_transform(self, xvectors: np.ndarray, lda_dim: int | None = None) -> np.ndarray:
        """``(num_embeddings, lda_dim)`` coordinates in the PLDA space (first ``lda_dim``)."""
        return ((xvectors - self.mu) @ self.transform.T)[:, :lda_dim]

    def features(self, embeddings: np.ndarray, lda_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """VBx inputs for raw embeddings: ``(features (n, lda_dim), phi (lda_dim,))``.

        Raises
        ------
        ConfigError
            If ``lda_dim`` exceeds the dimension of the PLDA space, or the embeddings do not
            have the PLDA's input dimension.
        """
        if lda_dim > self.dimension:
            raise ConfigError(f"lda_dim {lda_dim} exceeds the PLDA's {self.dimension} dimensions")
        if embeddings.shape[-1] != len(self.mean1):
            raise ConfigError(
                f"the speaker embeddings have {embeddings.shape[-1]} dimensions, the PLDA model "
                f"expects {len(self.mean1)}: use the embedding model it was trained for"
            )
        features = self.plda_transform(self.xvector_transform(embeddings), lda_dim)
        return features, self.psi[:lda_dim]


def _forward_backward(
    log_likelihoods: np.ndarray, transitions: np.ndarray, initial: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Posteriors of an HMM; returns ``(gamma, log_total, log_alpha, log_beta)``."""
    num_steps, num_states = log_likelihoods.shape
    log_tr = np.log(transitions)
    log_alpha = np.empty_like(log_likelihoods)
    log_beta = np.zeros_like(log_likelihoods)
    with np.errstate(divide="ignore"):
        log_alpha[0] = log_likelihoods[0] + np.log(initial)
    for t in range(1, num_steps):
        log_alpha[t] = log_likelihoods[t] + logsumexp(log_alpha[t - 1][:, None] + log_tr, axis=0)
    for t in range(num_steps - 2, -1, -1):
        log_beta[t] = logsumexp(log_tr + log_likelihoods[t + 1] + log_beta[t + 1], axis=1)
    log_total = logsumexp(log_alpha[-1])
    gamma = np.exp(log_alpha + log_beta - log_total)
    return gamma, log_total, log_alpha, log_beta


@dataclass(frozen=True)
class VBxResult:
    """What :func:`vbx` found.

    Attributes
    ----------
    gamma
        ``(num_embeddings, num_speakers)`` posterior of each embedding over the speakers.
    pi
        ``(num_speakers,)`` speaker priors (sum 1); redundant speakers tend to 0.
    elbo
        The evidence lower bound after each iteration.
    """

    gamma: np.ndarray
    pi: np.ndarray
    elbo: list[float]


def vbx(
    features: np.ndarray,
    phi: np.ndarray,
    init_labels: np.ndarray,
    fa: float = 0.07,
    fb: float = 0.8,
    loop_probability: float = 0.0,
    max_iters: int = 20,
    init_smoothing: float = 7.0,
    epsilon: float = 1e-4,
) -> VBxResult:
    """Variational Bayes clustering of PLDA-space features, started from a hard clustering.

    The initial posteriors are ``softmax(init_smoothing · one_hot(init_labels))`` (the one-hot
    labels themselves when ``init_smoothing`` is negative), one speaker per initial cluster with
    uniform priors. Each iteration updates the speaker models (posterior mean ``alpha`` and
    variance ``inv_l`` of each speaker's latent variable), the per-embedding log-likelihoods,
    the posteriors and the priors; iterations stop after ``max_iters`` or when the ELBO gains
    less than ``epsilon``.

    Parameters
    ----------
    features
        ``(num_embeddings, dim)`` features in the PLDA space.
    phi
        ``(dim,)`` across-speaker variances of those dimensions.
    init_labels
        ``(num_embeddings,)`` initial cluster ``0 .. K - 1`` of every embedding.
    fa, fb, loop_probability, max_iters, init_smoothing, epsilon
        See the module docstring.

    Returns
    -------
    VBxResult
    """
    x = np.asarray(features, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    init_labels = np.asarray(init_labels, dtype=np.int64)
    num_points, dim = x.shape
    num_speakers = int(init_labels.max()) + 1
    gamma = np.zeros((num_points, num_speakers))
    gamma[np.arange(num_points), init_labels] = 1.0
    if init_smoothing >= 0:
        gamma = softmax(init_smoothing * gamma, axis=1)
    pi = np.full(num_speakers, 1.0 / num_speakers)

    constant = -0.5 * (np.sum(x**2, axis=1, keepdims=True) + dim * np.log(2 * np.pi))
    rho = x * np.sqrt(phi)
    elbo: list[float] = []
    for iteration in range(max_iters):
        inv_l = 1.0 / (1.0 + fa / fb * gamma.sum(axis=0)[:, None] * phi)  # (speakers, dim)
        alpha = fa / fb * inv_l * (gamma.T @ rho)  # (speakers, dim)
        log_p = fa * (rho @ alpha.T - 0.5 * (inv_l + alpha**2) @ phi + constant)
        # (num_points, speakers)
        if loop_probability <= 0.0:
            log_prior = np.log(pi + 1e-8)
            log_marginal = logsumexp(log_p + log_prior, axis=-1)
            log_total = float(np.sum(log_marginal))
            gamma = np.exp(log_p + log_prior - log_marginal[:, None])
            pi = gamma.sum(axis=0)
        else:
            transitions = np.eye(num_speakers) * loop_probability + (1 - loop_probability) * pi
            gamma, log_total, log_alpha, log_beta = _forward_backward(log_p, transitions, pi)
            stay = np.exp(
                logsumexp(log_alpha[:-1], axis=1, keepdims=True)
                + log_p[1:]
                + log_beta[1:]
                - log_total
            )
            pi = gamma[0] + (1 - loop_probability) * pi * stay.sum(axis=0)
        pi = pi / pi.sum()
        value = log_total + fb * 0.5 * float(np.sum(np.log(inv_l) - inv_l - alpha**2 + 1))
        elbo.append(value)
        if iteration > 0 and value - elbo[-2] < epsilon:
            if value < elbo[-2]:
                logger.debug("VBx: the ELBO decreased (%.6g -> %.6g)", elbo[-2], value)
            break
    return VBxResult(gamma, pi, elbo)
