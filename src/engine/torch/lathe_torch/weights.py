"""Whole weights (by HF name) into a model, checked first."""
import torch

from .errors import EngineError


def check_weights(model, weights):
    """Every parameter present with its (whole) shape, or an error naming the first that is not."""
    own = dict(model.named_parameters())
    missing = [n for n in own if n not in weights]
    if missing:
        raise EngineError(f'weights lack {missing[0]}' + (f' and {len(missing) - 1} more' if len(missing) > 1 else ''))
    for n, p in own.items():
        if tuple(weights[n].shape) != tuple(p.shape):
            raise EngineError(f'{n}: shape {list(weights[n].shape)} does not match the model\'s {list(p.shape)}')
    return own


def load_weights(model, weights):
    own = check_weights(model, weights)
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(weights[n].to(p.device))
