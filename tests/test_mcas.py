"""mCAS (the paper's Sect. 6.2.3): the metric itself, on a stand-in decoder whose samples are exact
class templates. The stand-in implements only what mCAS calls (encode, generate, eval); the thing
under test is the metric: its real-image selection, its sample labelling and its classifiers."""
import pytest
import torch

from cmisweep.config import EvalConfig
from cmisweep.data.images import ImageData
from cmisweep.metrics.images import evaluate_images
from cmisweep.metrics.mcas import mcas
from cmisweep.models.protocol import Gaussian
from helpers import synthetic_images

CLASSES = 10


def templates() -> torch.Tensor:
    """The noise-free image of each class of helpers.synthetic_images: a bar at row 2 + 2 y."""
    t = torch.zeros(CLASSES, 1, 28, 28)
    for c in range(CLASSES):
        t[c, 0, 2 + 2 * c: 5 + 2 * c, 4:24] = 1
    return t


class TemplateDecoder:
    """encode: z = one-hot of the nearest template (the image's class); generate: that class's
    template with 5% of pixels flipped by the metric's own noise (so a classifier has variety)."""

    z_dim = CLASSES

    def __init__(self):
        self.t = templates()
        self.generated: list[tuple[int, int]] = []  # (number of z, samples of each) per call
        self.encoded_classes: list[torch.Tensor] = []

    def eval(self):
        return self

    def encode(self, x):
        dist = (x.float().flatten(1)[:, None] - self.t.flatten(1)[None]).abs().sum(-1)
        self.encoded_classes.append(dist.argmin(1))
        z = torch.nn.functional.one_hot(dist.argmin(1), CLASSES).float()
        return Gaussian(z, torch.zeros_like(z))

    def generate(self, z, n=1, noise=None):
        self.generated.append((len(z), n))
        images = self.t[z.argmax(1).repeat_interleave(n)]
        return (images + (noise < 0.05).float()) % 2  # flip where noise < 0.05


def data():
    train_x, train_y = synthetic_images(600, seed=2)
    test_x, test_y = synthetic_images(1000, seed=3)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def templated(tmp_path_factory):
    """One mCAS run of the template decoder as the image evaluation runs it (default settings),
    shared by the tests that read it."""
    model = TemplateDecoder()
    train_x, train_y, test_x, test_y = data()
    images = ImageData("synthetic", train_x, train_y, train_x[:0], train_y[:0], test_x, test_y)
    cfg = EvalConfig(ihat=None, probes=False, sample_grid=False)
    scores, _ = evaluate_images(model, images, cfg, tmp_path_factory.mktemp("mcas"))
    return model, scores


def test_exact_class_templates_score_about_one(templated):
    _, scores = templated
    assert scores["mcas"] > 0.95 and scores["mcas_svm"] > 0.95


def test_shuffled_labels_score_about_chance():
    """The same samples with labels unrelated to their images (the real images' labels shuffled):
    chance is 1/10. The classifier sees ten templates, so a shuffle scores about the fraction of
    classes whose majority label happens to be right (0.1 expected, rarely above 0.3)."""
    train_x, train_y, test_x, test_y = data()
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    scores, _, _ = mcas(TemplateDecoder(), train_x, shuffled, test_x, test_y)
    assert scores["mcas"] < 0.3


def test_counts_are_the_papers_100_real_images_and_1000_samples(templated):
    model, scores = templated
    assert (scores["mcas_n_real"], scores["mcas_n_generated"], scores["mcas_n_test"]) == (100, 1000, 1000)
    # 10 samples of each of 100 z, in one call; 10 real images of each class, by the stand-in's
    # class read-out of the images the metric encoded
    assert model.generated == [(100, 10)]
    assert torch.equal(torch.bincount(model.encoded_classes[-1], minlength=CLASSES), torch.full((CLASSES,), 10))
