"""K JointCritics of one head as ONE module, so that one forward/backward step trains them all.

I-hat trains many fresh critics (seeds x negative forms x heads) on the same batches of s. One
at a time, each is a chain of small convolutions over the same large s (the PixelCNN's feature
map): launch- and memory-bound on a CPU. Stacked, the same FLOPs run as a few large kernels:
  layer 1: one conv from the shared s to all K members' channels (groups = G input streams,
           i.e. critic seeds that draw their own batches; G = 1 when all members share s),
  layer 2, 3: grouped convs (groups = K): member k sees only its own channels,
  BatchNorm over K*width channels = K separate BatchNorms (statistics are per channel),
  heads: per-member parameters with a leading K dimension (batched matmuls).
Members never share a parameter, so the gradients of the summed loss are each member's own and
Adam (elementwise) steps each exactly as it would step a lone critic. Built from JointCritics
(their initial weights, so seeds mean what they meant), and unstackable back into them.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from cmisweep.models.critics import JointCritic


def _stack_layer(layers: list[nn.Module], groups: int, first: bool) -> nn.Module:
    """One layer of the embedding for all members; `first` reads the G shared input streams."""
    ref, k = layers[0], len(layers)
    g = groups if first else k
    if isinstance(ref, nn.Linear):  # a vector s: Linear == Conv1d with kernel 1 on length 1
        out = nn.Conv1d(ref.in_features * (groups if first else k), ref.out_features * k, 1, groups=g)
        out.weight.data = torch.cat([m.weight.data for m in layers])[..., None].clone()
        out.bias.data = torch.cat([m.bias.data for m in layers]).clone()
        return out
    if isinstance(ref, (nn.Conv1d, nn.Conv2d)):
        out = type(ref)(ref.in_channels * (groups if first else k), ref.out_channels * k, ref.kernel_size,
                        ref.stride, ref.padding, groups=g)
        out.weight.data = torch.cat([m.weight.data for m in layers]).clone()
        out.bias.data = torch.cat([m.bias.data for m in layers]).clone()
        return out
    if isinstance(ref, nn.modules.batchnorm._BatchNorm):
        out = type(ref)(ref.num_features * k, ref.eps, ref.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, name).data = torch.cat([getattr(m, name).data for m in layers]).clone()
        out.num_batches_tracked.data = ref.num_batches_tracked.data.clone()
        return out
    if isinstance(ref, nn.ReLU):
        return nn.ReLU()
    raise TypeError(f"cannot stack {type(ref).__name__}")


class CriticEnsemble(nn.Module):
    """critics: K JointCritics of one head and s shape, ordered stream-major: members
    [i*K/G, (i+1)*K/G) read input stream i (groups = G)."""

    def __init__(self, critics: list[JointCritic], groups: int = 1):
        super().__init__()
        ref, k = critics[0], len(critics)
        if k % groups or any(c.head != ref.head or c.s_rank != ref.s_rank for c in critics):
            raise ValueError("an ensemble needs one head and s shape, and K a multiple of the streams")
        self.head, self.s_rank, self.k, self.groups = ref.head, ref.s_rank, k, groups
        self._template = [copy.deepcopy(ref)]  # unstack() fills copies of it (a list: not a submodule)
        nets = [c.embed_net for c in critics]
        self.embed_net = nn.Sequential(*[_stack_layer([n[i] for n in nets], groups, i == 0)
                                         for i in range(len(ref.embed_net))])
        if self.s_rank == 3:  # measured: grouped Conv2d ~20% faster channels-last on a CPU (oneDNN)
            self.embed_net.to(memory_format=torch.channels_last)
        if ref.head == "cosine":
            self.log_scale = nn.Parameter(torch.stack([c.log_scale.data for c in critics]).clone())
        if ref.head == "mlp":  # Linear layers as (K, out, in) weights, (K, out) biases
            lin = [i for i, m in enumerate(ref.score_net) if isinstance(m, nn.Linear)]
            self.w = nn.ParameterList([torch.stack([c.score_net[i].weight.data for c in critics]).clone() for i in lin])
            self.b = nn.ParameterList([torch.stack([c.score_net[i].bias.data for c in critics]).clone() for i in lin])

    def member_stream(self) -> torch.Tensor:
        """The input stream each member reads, (K,)."""
        return torch.arange(self.k) // (self.k // self.groups)

    def embed(self, s: torch.Tensor) -> torch.Tensor:
        """s: (B, G, *s_shape), one batch per stream -> e: (K, B, emb)."""
        b = s.shape[0]
        if self.s_rank == 2:
            s = s.transpose(2, 3)  # (B, G, T, D) -> (B, G, D, T): Conv1d over time, as JointCritic
        s = s.reshape(b, -1, *s.shape[3:]) if self.s_rank > 1 else s.reshape(b, -1, 1)
        if self.s_rank == 3:
            s = s.contiguous(memory_format=torch.channels_last)
        e = self.embed_net(s)
        return e.reshape(b, self.k, -1, *e.shape[2:]).flatten(3).mean(-1).transpose(0, 1)

    def score(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """e, z: (K, B, .) -> logits (K, B)."""
        if self.head == "dot":
            return (e * z).sum(-1)
        if self.head == "cosine":
            return self.log_scale.exp()[:, None] * F.cosine_similarity(e, z, dim=-1)
        h = torch.cat([e, z], dim=-1)
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            h = torch.baddbmm(b[:, None], h, w.transpose(1, 2))
            h = F.relu(h) if i < len(self.w) - 1 else h
        return h.squeeze(-1)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(self.embed(s), z)

    def unstack(self) -> list[JointCritic]:
        """The members as K separate JointCritics (the inverse of the constructor)."""
        k, out = self.k, []
        for j in range(k):
            c = copy.deepcopy(self._template[0]).to(self.embed_net[0].weight.device)
            for mine, theirs in zip(self.embed_net, c.embed_net):
                for name, t in list(theirs.named_parameters()) + list(theirs.named_buffers()):
                    full = getattr(mine, name).data
                    t.data = (full if name == "num_batches_tracked" else full.chunk(k)[j]).reshape(t.shape).clone()
            if self.head == "cosine":
                c.log_scale.data = self.log_scale.data[j].clone()
            if self.head == "mlp":
                lin = [m for m in c.score_net if isinstance(m, nn.Linear)]
                for m, w, b in zip(lin, self.w, self.b):
                    m.weight.data, m.bias.data = w.data[j].clone(), b.data[j].clone()
            out.append(c)
        return out
