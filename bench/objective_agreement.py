"""How different are the objectives' energy gradients at a trained model? (Why the divergences tie on FID.)

    python -m bench.objective_agreement --model fmnist-js --n 512

Takes --n VALIDATION images as data and --n samples of the model (its generation sampler, seed 0), then the
energy-parameter gradient of every objective on that same batch, with the model's critic for the log-ratio
r = H + E. Every f-EBM objective's optimal critic is the same log p/q in this parametrisation, but a trained
critic's level (its constant offset) is only right for the objective it was trained with, and a wrong level
adds a large term (1 - E_q[e^r]) E_q[grad E] for KL, say; so each objective gets the critic shifted by the
constant that maximises its own variational bound on this batch (a 1-D grid search). Compares the
gradients by what they do to the model: the change of energy each causes on those 2n images, centred (a
constant shift of E leaves the model's distribution unchanged), measured by central differences in float64.
Prints the spread of r on data and samples and, per objective, f''(1), the size of that centred change per
unit f''(1), and its cosine with each other objective's (and the raw parameter-space cosines in the JSON);
last, the cosine between CD's change and the one training applied (the model's own objective, its critic
unshifted, the l2 penalty on energies).

Why expect agreement: with r near 0, T(r) = f'(e^r) and Fstar(r) expand to f''(1) r plus constants, so each
f-EBM gradient (Eq. 18) is f''(1) times [contrastive divergence's gradient + Cov_q(r, grad E)] up to terms of
order r^2, and Adam removes the factor f''(1). The tests check the pieces against closed forms
(tests/test_bench_objective_agreement.py), not the benchmark.
"""

from __future__ import annotations

import argparse
import json

import torch

from febm.model import load_model
from febm.objectives import Objective
from febm.restore import generate
from training.data import load_dataset, to_float

OBJECTIVES = ("cd", "kl", "rkl", "js", "sh", "chi2", "neyman")


@torch.no_grad()
def best_critic_shift(objective: Objective, r_pos: torch.Tensor, r_neg: torch.Tensor) -> float:
    """The constant c maximising E_p[T(r + c)] - E_q[Fstar(r + c)]: the level this objective's critic
    would settle at (searched on [-3, 3] in steps of 1e-3)."""
    shifts = torch.linspace(-3, 3, 6001, dtype=r_pos.dtype)[:, None]
    div = objective.divergence
    value = div.T(r_pos + shifts).mean(1) - div.Fstar(r_neg + shifts).mean(1)
    return shifts[value.argmax()].item()


def energy_gradient(model, objective: Objective, x_pos: torch.Tensor, x_neg: torch.Tensor,
                    shift_critic: bool = True) -> tuple:
    """The flattened gradient of ``objective``'s energy loss w.r.t. the energy's parameters,
    with the critic shifted to this objective's level (unless ``shift_critic`` is false); and that shift."""
    params = [p for p in model.energy.parameters() if p.requires_grad]
    x, sizes = torch.cat([x_pos, x_neg]), [x_pos.shape[0], x_neg.shape[0]]
    e_pos, e_neg = model.energy(x).split(sizes)
    h_pos = h_neg = None
    shift = 0.0
    if objective.uses_critic:
        with torch.no_grad():
            h_pos, h_neg = model.critic(x).split(sizes)
            if shift_critic:
                shift = best_critic_shift(objective, h_pos + e_pos, h_neg + e_neg)
        h_pos, h_neg = h_pos + shift, h_neg + shift
    loss = objective.energy_loss(e_pos, e_neg, h_pos, h_neg)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]), shift


@torch.no_grad()
def centred_energy_change(model, gradient: torch.Tensor, x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """d/dt E(x; theta - t g) at t = 0 (the descent step's effect on each energy), minus its mean over x."""
    params = [p for p in model.energy.parameters() if p.requires_grad]
    theta = torch.nn.utils.parameters_to_vector(params)
    step = eps * gradient / gradient.norm()

    def energies(delta):
        torch.nn.utils.vector_to_parameters(theta + delta, params)
        return model.energy(x)

    change = (energies(-step) - energies(step)) / (2 * eps) * gradient.norm()
    torch.nn.utils.vector_to_parameters(theta, params)
    return change - change.mean()


def cosines(vectors: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    cos = torch.nn.functional.cosine_similarity
    return {a: {b: round(cos(va, vb, dim=0).item(), 4) for b, vb in vectors.items()} for a, va in vectors.items()}


def spread(r: torch.Tensor) -> dict:
    return {"mean": round(r.mean().item(), 4), "std": round(r.std().item(), 4),
            "min": round(r.min().item(), 3), "max": round(r.max().item(), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.objective_agreement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-js", help="a model with a critic")
    parser.add_argument("--n", type=int, default=512, help="data images and model samples")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    if not model.has_critic:
        parser.error(f"{args.model} has no critic: pick an f-EBM model (not cd)")
    data = load_dataset(model.config["dataset"], "val")
    x_pos = to_float(data.images[: args.n])
    x_neg = generate(model, args.n, seed=0, progress=False)
    with torch.no_grad():
        r_pos, r_neg = model.log_ratio(x_pos), model.log_ratio(x_neg)
    model.double()  # central differences need the precision
    x_pos, x_neg = x_pos.double(), x_neg.double()
    probe = torch.cat([x_pos, x_neg])  # where the energy changes are compared
    objectives = {name: Objective(name) for name in OBJECTIVES}
    curvature = {name: o.divergence.f_second_at_one if o.uses_critic else 1.0 for name, o in objectives.items()}
    grads, shifts = {}, {}
    for name, objective in objectives.items():
        grads[name], shifts[name] = energy_gradient(model, objective, x_pos, x_neg)
    changes = {name: centred_energy_change(model, g, probe) for name, g in grads.items()}
    cosine = cosines(changes)
    # what training applied: the model's own objective with its l2 penalty and its critic as trained (whose
    # level that penalty sets)
    own, l2 = model.divergence, model.config["training"]["options"]["l2"]
    as_trained, _ = energy_gradient(model, Objective(own, l2=l2), x_pos, x_neg, shift_critic=False)
    as_trained = cosines({own: centred_energy_change(model, as_trained, probe),
                          "cd": changes["cd"]})[own]["cd"]
    print(json.dumps({
        "model": args.model, "n": args.n, "data": "val split", "samples": "generate(seed=0), model defaults",
        "r_data": spread(r_pos), "r_samples": spread(r_neg),
        "f_second_at_one": curvature, "critic_shift": shifts,
        "grad_norm_over_curvature": {k: round(g.norm().item() / curvature[k], 6) for k, g in grads.items()},
        "parameter_cosine": cosines(grads),
        "change_norm_over_curvature": {k: round(c.norm().item() / curvature[k], 6) for k, c in changes.items()},
        "change_cosine": cosine, "own_objective_critic_as_trained_cosine_vs_cd": as_trained,
    }, indent=1))
    print("\n| objective | f''(1) | centred energy change / f''(1) | "
          + " | ".join(f"cos vs {b}" for b in OBJECTIVES) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in OBJECTIVES) + " |")
    for a in OBJECTIVES:
        print(f"| {a} | {curvature[a]:g} | {changes[a].norm().item() / curvature[a]:.4g} | "
              + " | ".join(f"{cosine[a][b]:.3f}" for b in OBJECTIVES) + " |")
    print(f"\n{own} as trained (its critic unshifted, l2 = {l2:g} on energies), cosine vs cd: {as_trained:.3f}")


if __name__ == "__main__":
    main()
