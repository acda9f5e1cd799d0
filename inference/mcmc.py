r"""A NUTS reference posterior p(z | x) with the model frozen, summarized with ArviZ.

Pyro's NUTS (Hoffman & Gelman 2014, arXiv:1111.4246) draws the latent site of a batch of
examples jointly; their posteriors are independent given the decoder, so the joint chain is
a chain for each. Each chain starts from its own dispersed point (``init_to_uniform``, seeded)
and the chains run one after another in this process, so results do not depend on the
machine's core count. The draws become an ArviZ ``InferenceData`` through ``az.from_dict``
(``az.from_pyro`` is not used: ArviZ 1.x drops it), and ``az.summary`` gives the
rank-normalized split R-hat and bulk/tail ESS (Vehtari et al. 2021, arXiv:1903.08008).
"""

import warnings
from typing import NamedTuple

import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_uniform

from pyrovae.inference.diagnostics import arviz
from pyrovae.inference.local_fit import frozen

__all__ = ["NUTSResult", "nuts_posterior"]


class NUTSResult(NamedTuple):
    samples: torch.Tensor  #: draws of the latent site, shape (chains, draws, B, D)
    idata: object  #: ArviZ InferenceData with the posterior group
    summary: object  #: ``az.summary`` table (pandas DataFrame): r_hat, ess_bulk, ess_tail, ...


def nuts_posterior(model, x, num_chains=4, num_samples=1000, warmup_steps=500, seed=0, progress=False):
    """Draw z ~ p(z | x) for every row of ``x`` (B, P) with NUTS, model parameters fixed.

    :param int num_chains: chains, run sequentially.
    :returns: a :class:`NUTSResult`.
    """
    site = model.latent_sites[0]

    def conditioned():
        model(x)

    chains = []
    with frozen(model):
        for chain in range(num_chains):  # one process, one chain at a time, each from its own start
            torch.manual_seed(seed * 1000 + chain)
            kernel = NUTS(conditioned, init_strategy=init_to_uniform(radius=2.0))
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                        disable_progbar=not progress)
            mcmc.run()
            chains.append(mcmc.get_samples()[site].detach().reshape(num_samples, x.shape[0], -1))
    samples = torch.stack(chains)  # (C, S, B, D)
    az = arviz()
    idata = az.from_dict(posterior={site: samples.cpu().numpy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, kind="diagnostics", round_to="none")
    return NUTSResult(samples, idata, summary)
