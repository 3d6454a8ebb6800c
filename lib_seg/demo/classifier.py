"""A tiny digit classifier, used only to score samples: its penultimate features feed the Fréchet
distance (an FID in miniature) and its predictions give class accuracy for conditional runs."""
import torch
from torch import nn

from .data import NUM_CLASSES

FEATURE_DIM = 64


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(  # 32 -> 16 -> 8 -> 4
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images):
        """images (B, 1, 32, 32) in [-1, 1] -> penultimate features (B, FEATURE_DIM)."""
        return self.body(images)

    def forward(self, images):
        return self.head(self.features(images))


def load_classifier(path=None):
    from safetensors.torch import load_file
    from . import CLASSIFIER_PATH
    model = DigitClassifier()
    model.load_state_dict(load_file(path or CLASSIFIER_PATH))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def features_and_predictions(classifier, images, batch_size=500):
    """-> (features float64 numpy [N, FEATURE_DIM], predicted labels int64 tensor [N])."""
    feats, preds = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.clamp(-1, 1))
        feats.append(f)
        preds.append(classifier.head(f).argmax(1))
    return torch.cat(feats).double().numpy(), torch.cat(preds)
