"""The named losses, as the tfjs engine computes them (src/engine/tfjs/losses.ts): each returns what
is minimised and the values it reports, named as they appear in metrics.

On one rank of several (spec['shard'], see parallel.py) a loss divides by the whole batch's
denominators instead of its own rows', so the reported values are this rank's shares of the
one-process values, and what it minimises is scaled by the world size: DDP and FSDP average the
ranks' gradients, which then equal the one-process gradient."""
import torch
import torch.nn.functional as F


def token_logprobs(logits, targets):
    """log p(target) at every position [N] from logits [N, V]; targets outside [0, V) give 0."""
    v = logits.shape[-1]
    ok = (targets >= 0) & (targets < v)
    lp = torch.log_softmax(logits, -1).gather(1, targets.clamp(0, v - 1)[:, None])[:, 0]
    return torch.where(ok, lp, torch.zeros_like(lp))


def _mean(x, w, shard, norm):
    """The weighted mean of x, or on a rank this rank's share of the whole batch's."""
    if shard is not None:
        return ((x * w).sum() if w is not None else x.sum()) / shard['norms'][norm]
    return (x * w).sum() / w.sum().clamp(min=1) if w is not None else x.mean()


def cross_entropy(model, b, spec):
    logits, routers = model(b['inputs'])
    nll = -token_logprobs(logits, b['targets'])
    w = b.get('weights')
    shard = spec.get('shard')
    ce = _mean(nll, w, shard, 'tokens')
    total = ce * shard['size'] if shard else ce
    report = {'loss': ce}
    if routers:
        # Router statistics are per rank (like per micro-batch): each rank's own means.
        balance = torch.stack([r[0] for r in routers]).mean()
        z = torch.stack([r[1] for r in routers]).mean()
        util = torch.stack([r[2] for r in routers]).mean(0)
        total = total + balance * model.s['auxLossCoef'] + z * model.s['zLossCoef']
        report.update({'aux_loss': balance, 'z_loss': z, 'expert_util': util})
    if spec.get('accuracy'):
        hit = (logits.argmax(-1) == b['targets']).float()
        report['accuracy'] = _mean(hit, w, shard, 'tokens')
    return total, report


def sequence_logprobs(model, b):
    """Weighted (completion-masked) log-probability per sequence [B]."""
    logits, _ = model(b['inputs'])
    lp = token_logprobs(logits, b['targets']).view(b['batch'], b['seq'])
    return (lp * b['weights'].view(b['batch'], b['seq'])).sum(1)


def dpo(model, b, spec):
    n = spec['pairs']
    policy = sequence_logprobs(model, b)
    ref = spec['reference']
    chosen = policy[:n] - ref[:n]
    rejected = policy[n:] - ref[n:]
    logits = (chosen - rejected) * spec['beta']
    losses = F.softplus(-logits)
    eps = spec['labelSmoothing']
    if eps > 0:
        losses = losses * (1 - eps) + F.softplus(logits) * eps
    shard = spec.get('shard')
    mean = (lambda x: x.sum() / shard['norms']['pairs']) if shard else (lambda x: x.mean())
    loss = mean(losses)
    beta = spec['beta']
    return loss * shard['size'] if shard else loss, {
        'loss': loss,
        'rewards/chosen': mean(chosen * beta),
        'rewards/rejected': mean(rejected * beta),
        'rewards/margins': mean(logits),
        'rewards/accuracies': mean((logits > 0).float()),
        'logps/chosen': mean(policy[:n]),
        'logps/rejected': mean(policy[n:]),
    }


def policy_gradient(model, b, spec):
    bsz, t = b['batch'], b['seq']
    logits, _ = model(b['inputs'])
    logp = token_logprobs(logits, b['targets']).view(bsz, t)
    valid = spec['valid'].view(bsz, 1)
    mask = b['weights'].view(bsz, t) * valid
    adv = spec['advantages'].view(bsz, 1)
    ratio = torch.exp(logp - spec['old'].view(bsz, t))
    s1 = ratio * adv
    s2 = ratio.clamp(1 - spec['clipEpsilon'], 1 + spec['clipEpsilon']) * adv
    per_token = -torch.minimum(s1, s2)
    kl = torch.zeros_like(logp)
    if spec.get('reference') is not None:
        d = spec['reference'].view(bsz, t) - logp
        kl = torch.exp(d) - d - 1
        if spec['beta'] > 0:
            per_token = per_token + kl * spec['beta']
    per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    shard = spec.get('shard')
    n_valid = shard['norms']['valid'] if shard else valid.sum().clamp(min=1)
    n_tok = shard['norms']['tokens'] if shard else mask.sum().clamp(min=1)
    loss = (per_seq * valid.view(-1)).sum() / n_valid
    clipped = ((mask > 0) & (s1 != torch.minimum(s1, s2))).float()
    report = {'loss': loss, 'kl': (kl * mask).sum() / n_tok, 'clip_ratio': clipped.sum() / n_tok}
    return loss * shard['size'] if shard else loss, report


LOSSES = {'cross_entropy': cross_entropy, 'dpo': dpo, 'policy_gradient': policy_gradient}
