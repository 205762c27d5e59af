"""PWC_Recons' layers as the arrays the fused CPU ops take (ops/fused_conv.py): which
ResBlocks, head convs and upsampling tails fit them, and their weights laid out for them.

Kept apart from ops/fused_conv.py, which knows layouts and oneDNN but no model.
"""
import numpy as np

__all__ = ['same_conv', 'chain_weights', 'head_weights', 'tail_fits', 'tail_weights']


def same_conv(c, k):
    """Whether conv c is k x k, stride 1, undilated, ungrouped, 'same'-padded, with a bias."""
    return (c.bias is not None and c.groups == 1 and tuple(c.weight.shape[2:]) == (k, k)
            and tuple(c.stride) == (1, 1) and tuple(c.dilation) == (1, 1) and tuple(c.padding) == (k // 2, k // 2))


def _plain_resblock(b):
    c1, c2 = b.conv1, b.conv2
    k = c1.weight.shape[2]
    return (b.res_translate is None and same_conv(c1, k) and same_conv(c2, k)
            and c1.weight.shape[0] == c1.weight.shape[1] == c2.weight.shape[0] == c2.weight.shape[1])


def chain_weights(blocks):
    """(weights [2B,C,C,K,K], biases [2B,C]) of ResBlocks that fused_conv.resblock_chain takes, as numpy."""
    blocks = list(blocks)
    if not blocks or not all(_plain_resblock(b) for b in blocks) \
            or len({tuple(b.conv1.weight.shape) for b in blocks}) != 1:
        raise ValueError('resblock_chain takes ResBlocks of one width, stride 1, dilation 1, with biases')
    convs = [c for b in blocks for c in (b.conv1, b.conv2)]
    return (np.stack([c.weight.numpy().astype(np.float32) for c in convs]),
            np.stack([c.bias.numpy().astype(np.float32) for c in convs]))


def head_weights(conv, blocks_weights):
    """(weights [C,Ci,K,K], bias [C]) of a head conv for ops/fused_conv.py:resblock_chain, as numpy:
    a same-padded conv with bias onto the blocks' C channels (``blocks_weights`` as
    :func:`chain_weights` gives them)."""
    k = conv.weight.shape[2]
    if not (k % 2 and same_conv(conv, k) and conv.weight.shape[0] == blocks_weights.shape[1]):
        raise ValueError(f'resblock_chain takes a head conv stride 1, dilation 1, same-padded, with a bias, '
                         f'onto {blocks_weights.shape[1]} channels')
    return conv.weight.numpy().astype(np.float32), conv.bias.numpy().astype(np.float32)


def tail_fits(up_convs, out_convs):
    """Whether :func:`tail_weights` takes these layers (same-padded convs C->4C, at least one, then C->C->Co)."""
    up_convs, out_convs = list(up_convs), list(out_convs)
    if not up_convs or len(out_convs) != 2:
        return False
    c, k = out_convs[0].weight.shape[1], out_convs[0].weight.shape[2]
    return (k % 2 == 1 and all(same_conv(v, k) for v in up_convs + out_convs)
            and all(tuple(v.weight.shape[:2]) == (4 * c, c) for v in up_convs)
            and tuple(out_convs[0].weight.shape[:2]) == (c, c) and out_convs[1].weight.shape[1] == c)


def tail_weights(up_convs, out_convs):
    """The arrays ops/fused_conv.py:upsample_tail takes, as numpy: upsampling weights with their
    output channels reordered (c, k) -> (k, c), so that PixelShuffle moves runs of channels."""
    up_convs, out_convs = list(up_convs), list(out_convs)
    if not tail_fits(up_convs, out_convs):
        raise ValueError('upsample_tail takes stride-1 same-padded convs with biases, C->4C then C->C->Co')
    c, k = out_convs[0].weight.shape[1], out_convs[0].weight.shape[2]
    wu = np.zeros((len(up_convs), 4 * c, c, k, k), np.float32)
    bu = np.zeros((len(up_convs), 4 * c), np.float32)
    for i, v in enumerate(up_convs):
        w = v.weight.numpy().astype(np.float32).reshape(c, 4, c, k, k)
        wu[i] = w.transpose(1, 0, 2, 3, 4).reshape(4 * c, c, k, k)
        bu[i] = v.bias.numpy().astype(np.float32).reshape(c, 4).T.reshape(4 * c)
    o1, o2 = out_convs
    return (wu, bu) + tuple(v.numpy().astype(np.float32)
                                           for v in (o1.weight, o1.bias, o2.weight, o2.bias))
