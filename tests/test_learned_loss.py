"""LearnedLoss: calling conventions, persistence (safetensors, joblib, pickle), bad files."""

import copy
import os
import pickle

import joblib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sklearn_ml3 import LearnedLoss, SineTasks
from sklearn_ml3.tasks import SupervisedProblem


@pytest.fixture(scope="module")
def trained():
    problem = SupervisedProblem(
        SineTasks(n_points=20),
        lambda n_in, n_out: torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.ReLU(),
                                                torch.nn.Linear(8, n_out)),
    )
    loss = LearnedLoss(hidden_layer_sizes=(10, 10), random_state=0)
    return loss.meta_fit(problem, n_meta_iter=5, inner_lr=0.01, verbose=0)


def probe(loss):
    gen = torch.Generator().manual_seed(0)
    y_pred, y = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    return loss(y_pred, y).item(), loss.per_sample(y_pred, y)


def test_call_is_a_differentiable_scalar():
    loss = LearnedLoss(random_state=0)
    y_pred = torch.randn(10, requires_grad=True)
    value = loss(y_pred, torch.randn(10))
    assert value.shape == ()
    value.backward()
    assert y_pred.grad is not None and torch.isfinite(y_pred.grad).all()
    assert value.item() >= 0  # softplus output


def test_regression_handles_multi_output_and_extra_inputs():
    loss = LearnedLoss(n_extra_inputs=1, random_state=0)
    per = loss.per_sample(torch.randn(7, 3), torch.randn(7, 3), torch.randn(7))
    assert per.shape == (7,)
    with pytest.raises(ValueError, match="called as loss"):
        loss(torch.randn(7), torch.randn(7))
    with pytest.raises(ValueError, match="same shape"):
        LearnedLoss(random_state=0)(torch.randn(7), torch.randn(6))


def test_classification_loss_serves_any_number_of_classes():
    loss = LearnedLoss(kind="classification", hidden_layer_sizes=(40, 40), random_state=0)
    for n_classes in (2, 3, 10):
        proba = torch.softmax(torch.randn(6, n_classes), -1)
        onehot = torch.nn.functional.one_hot(torch.arange(6) % n_classes, n_classes).float()
        assert loss.per_sample(proba, onehot).shape == (6,)
    with pytest.raises(ValueError, match="n_samples, n_classes"):
        loss(torch.rand(6, 3), torch.rand(6, 2))


def test_features_loss_concatenates_its_inputs():
    loss = LearnedLoss(kind="features", n_inputs=6, random_state=0)
    assert loss(torch.randn(4, 3), torch.randn(4, 2), torch.randn(4)).shape == ()
    with pytest.raises(ValueError, match="reads 6 features"):
        loss(torch.randn(4, 3))


def test_quadratic_structure_is_a_learned_controller_and_round_trips(tmp_path):
    structure = {"action_columns": [4, 5], "state_columns": [0, 1, 2, 3]}
    loss = LearnedLoss(kind="features", n_inputs=6, hidden_layer_sizes=(8,), bias=True,
                       structure=structure, learned_lr=True, random_state=0)
    # a fresh controller has no random offset: zero biases, a zero target at zero inputs
    assert all(not m.bias.any() for m in loss.network_.loss.target if hasattr(m, "bias"))
    assert not loss.network_.loss.target(torch.zeros(1, 4)).any()
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    target = loss.network_.loss.target(x[:, :4])
    torch.testing.assert_close(loss.per_sample(x), 0.5 * (x[:, 4:] - target).pow(2).sum(-1))
    # the gradient pulls each action towards the target of its state
    a = x[:, 4:].clone().requires_grad_(True)
    loss.per_sample(torch.cat([x[:, :4], a], 1)).sum().backward()
    torch.testing.assert_close(a.grad, (x[:, 4:] - target).detach())
    assert f"structure={structure}" in repr(loss)
    loaded = LearnedLoss.load(loss.save(tmp_path / "controller.ml3"))
    assert loaded.structure == structure and loaded.get_config() == loss.get_config()
    torch.testing.assert_close(loaded(x), loss(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="distinct"):
        LearnedLoss(kind="features", n_inputs=6,
                    structure={"action_columns": [4, 5], "state_columns": [3, 4]})
    with pytest.raises(ValueError, match="structure must be a dict"):
        LearnedLoss(kind="features", n_inputs=6, structure={"action_columns": [4, 5]})


def test_feedback_structure_moves_actions_by_a_learned_gain_times_the_error(tmp_path):
    structure = {"action_columns": [4, 5], "error_columns": [2, 3], "state_columns": [0, 1]}
    loss = LearnedLoss(kind="features", n_inputs=6, hidden_layer_sizes=(8,), bias=True,
                       structure=structure, learned_lr=True, random_state=0)
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    gain = loss.network_.loss.gain(x[:, :2]).reshape(7, 2, 2)  # (action, error) per row
    push = (gain @ x[:, 2:4, None])[..., 0]
    torch.testing.assert_close(loss.per_sample(x), -(x[:, 4:] * push).sum(-1))
    # the gradient step moves each action by G(state) error, and not at all without an error
    a = x[:, 4:].clone().requires_grad_(True)
    loss.per_sample(torch.cat([x[:, :4], a], 1)).sum().backward()
    torch.testing.assert_close(a.grad, -push.detach())
    a = x[:, 4:].clone().requires_grad_(True)
    loss.per_sample(torch.cat([x[:, :2], torch.zeros(7, 2), a], 1)).sum().backward()
    assert not a.grad.any()
    loaded = LearnedLoss.load(loss.save(tmp_path / "feedback.ml3"))
    assert loaded.structure == structure and loaded.get_config() == loss.get_config()
    torch.testing.assert_close(loaded(x), loss(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="distinct"):
        LearnedLoss(kind="features", n_inputs=6, structure={
            "action_columns": [4, 5], "error_columns": [3, 4], "state_columns": [0, 1]})
    with pytest.raises(ValueError, match="structure must be a dict"):
        LearnedLoss(kind="features", n_inputs=6,
                    structure={"action_columns": [4, 5], "error_columns": [2, 3]})


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kind="ranking"), "kind must be one of"),
        (dict(kind="features"), "needs n_inputs"),
        (dict(n_inputs=3), "only used with kind='features'"),
        (dict(activation="swish"), "activation must be one of"),
        (dict(output="sigmoid"), "output must be one of"),
        (dict(kind="features", n_inputs=6, structure={"action_columns": 4,
                                                       "state_columns": [0, 1]}),
         "structure columns must be"),
        (dict(kind="features", n_inputs=6, structure={"score_column": "log_prob"}),
         "structure columns must be"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnedLoss(**kwargs)


def test_same_random_state_same_network():
    a, b = LearnedLoss(random_state=3), LearnedLoss(random_state=3)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)
    state = torch.random.get_rng_state()
    LearnedLoss(random_state=4)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_save_load_round_trip(tmp_path, trained):
    path = trained.save(tmp_path / "sine.ml3")
    loaded = LearnedLoss.load(path)
    value, per = probe(trained)
    value2, per2 = probe(loaded)
    assert value == value2
    torch.testing.assert_close(per, per2, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.meta_history_, trained.meta_history_)
    assert loaded.meta_info_ == trained.meta_info_
    assert loaded.get_config() == trained.get_config()
    assert "meta_trained=<5 iters" in repr(loaded)


@pytest.mark.parametrize("dump", ["joblib", "pickle", "deepcopy"])
def test_python_serialisation_round_trips(tmp_path, trained, dump):
    if dump == "joblib":
        joblib.dump(trained, tmp_path / "loss.joblib")
        other = joblib.load(tmp_path / "loss.joblib")
    elif dump == "pickle":
        other = pickle.loads(pickle.dumps(trained))
    else:
        other = copy.deepcopy(trained)
    assert probe(other)[0] == probe(trained)[0]
    np.testing.assert_array_equal(other.meta_history_, trained.meta_history_)
    # independent copies: changing one does not change the other
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert probe(other)[0] != probe(trained)[0]


def test_loading_missing_corrupt_truncated_or_foreign_files(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="no LearnedLoss file"):
        LearnedLoss.load(tmp_path / "missing.ml3")

    junk = tmp_path / "junk.ml3"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="not a readable LearnedLoss file"):
        LearnedLoss.load(junk)

    good = trained.save(tmp_path / "good.ml3")
    truncated = tmp_path / "truncated.ml3"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ValueError, match="not a readable LearnedLoss file"):
        LearnedLoss.load(truncated)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a sklearn-ml3 LearnedLoss"):
        LearnedLoss.load(foreign)

    pickled = tmp_path / "pickled.ml3"
    joblib.dump(trained, pickled)
    with pytest.raises(ValueError, match="not a readable LearnedLoss file"):
        LearnedLoss.load(pickled)


def test_failed_save_keeps_the_existing_file(tmp_path, trained, monkeypatch):
    path = trained.save(tmp_path / "keep.ml3")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        LearnedLoss(random_state=9).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ml3"]


def test_float64_and_device_moves_keep_values(trained):
    other = copy.deepcopy(trained).to(torch.float64)
    assert other.dtype == torch.float64
    assert probe(other)[0] == pytest.approx(probe(trained)[0], rel=1e-5)


def test_unseeded_losses_differ():
    a, b = LearnedLoss(), LearnedLoss()
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_loss_saves_pickles_and_loads_anywhere(tmp_path, trained):
    import subprocess
    import sys

    gpu = copy.deepcopy(trained).to("cuda")
    assert gpu.device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    y_pred, y = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    assert gpu(y_pred.cuda(), y.cuda()).item() == pytest.approx(probe(trained)[0], rel=1e-5)

    gpu.save(tmp_path / "gpu.ml3")
    on_cpu = LearnedLoss.load(tmp_path / "gpu.ml3")
    assert on_cpu.device.type == "cpu"
    assert probe(on_cpu)[0] == pytest.approx(probe(trained)[0], rel=1e-5)
    back_on_gpu = LearnedLoss.load(tmp_path / "gpu.ml3", device="cuda")
    assert back_on_gpu.device.type == "cuda"

    (tmp_path / "gpu.pkl").write_bytes(pickle.dumps(gpu))
    code = ("import pickle, sys; loss = pickle.loads(open(sys.argv[1], 'rb').read());"
            "print(loss.device.type)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "gpu.pkl")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.stdout.strip() == "cpu"


def test_learned_lr_scales_the_gradient_and_survives_persistence(tmp_path):
    loss = LearnedLoss("features", n_inputs=3, hidden_layer_sizes=(8,), learned_lr=True,
                       random_state=0)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    theta = torch.tensor([0.5, -1.0, 2.0])
    assert loss.learning_rate(x).item() == 1.0  # untrained head: the step size is unchanged
    assert loss(x * theta).item() == pytest.approx(loss.per_sample(x * theta).mean().item())
    with torch.no_grad():
        loss.network_.rate[0].weight.normal_(generator=torch.Generator().manual_seed(2))
        loss.network_.rate[-1].weight.fill_(0.3)
    alpha = loss.learning_rate(x * theta)
    assert alpha.item() != pytest.approx(1.0)
    # d(alpha * L)/d theta = alpha * dL/d theta, in autograd and in torch.func alike
    grad = torch.func.grad(lambda t: loss(x * t))(theta)
    plain = torch.func.grad(lambda t: loss.per_sample(x * t).mean())(theta)
    torch.testing.assert_close(grad, alpha.detach() * plain)
    t = theta.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(loss(x * t), t)
    torch.testing.assert_close(auto, grad)
    # ... while alpha itself stays differentiable w.r.t. phi (meta-training learns it)
    loss.requires_grad_(True)
    loss(x * theta).backward()
    assert loss.network_.rate[-1].bias.grad.abs().item() > 0

    assert "learned_lr=True" in repr(loss)
    loss.save(tmp_path / "rate.ml3")
    for other in (LearnedLoss.load(tmp_path / "rate.ml3"), pickle.loads(pickle.dumps(loss))):
        assert other.learned_lr
        torch.testing.assert_close(other.learning_rate(x * theta), alpha)
        torch.testing.assert_close(other(x * theta), loss(x * theta))


def test_files_without_learned_lr_still_load(tmp_path, trained):
    import json

    from safetensors import safe_open

    trained.save(tmp_path / "a.ml3")
    with safe_open(str(tmp_path / "a.ml3"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    del config["learned_lr"]  # as written before the option existed
    meta["config"] = json.dumps(config)
    save_file(tensors, tmp_path / "old.ml3", metadata=meta)
    old = LearnedLoss.load(tmp_path / "old.ml3")
    assert not old.learned_lr and old.learning_rate(torch.zeros(3), torch.zeros(3)).item() == 1.0
    assert probe(old)[0] == pytest.approx(probe(trained)[0])


def test_learned_lr_meta_trains_alike_vectorised_or_looped():
    from sklearn_ml3 import MetaLossRegressor

    histories = []
    for vectorize in (True, False):
        loss = LearnedLoss(hidden_layer_sizes=(10, 10), learned_lr=True, random_state=0)
        loss.meta_fit(SineTasks(n_points=20), MetaLossRegressor(hidden_layer_sizes=(8,), lr=0.01),
                      n_meta_iter=10, inner_steps=3, tasks_per_iter=2, vectorize=vectorize,
                      verbose=0)
        histories.append(loss.meta_history_)
        assert loss.learning_rate(torch.zeros(4), torch.ones(4)).item() != 1.0  # it was learned
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
