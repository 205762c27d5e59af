"""Analytic convolution FLOPs of the model (bench/infer_speed.py's GFLOP/s): from the model's
configuration and the input size only, the PWC-Net cost volume included."""
import math


def conv_flops(cin, cout, k, px):
    """Multiply-adds x 2 of a convolution with ``px`` output pixels."""
    return 2 * cin * cout * k * k * px


def pwc_flops(h, w):
    """One Flow_PWC call (two frames) at LR size h x w: PWC runs at the 64-multiple size."""
    h64, w64 = math.ceil(h / 64) * 64, math.ceil(w / 64) * 64

    def px(level):
        return (h64 >> level) * (w64 >> level)

    chans = [3, 16, 32, 64, 96, 128, 196]
    extractor = sum(conv_flops(chans[l - 1], chans[l], 3, px(l)) + 2 * conv_flops(chans[l], chans[l], 3, px(l))
                    for l in range(1, 7))
    current = {2: 81 + 32 + 4, 3: 81 + 64 + 4, 4: 81 + 96 + 4, 5: 81 + 128 + 4, 6: 81}
    dense = (128, 128, 96, 64, 32)
    decoders = corr = 0
    for lv in range(6, 1, -1):
        corr += 2 * 81 * chans[lv] * px(lv)
        cin = current[lv]
        for cout in dense:
            decoders += conv_flops(cin, cout, 3, px(lv))
            cin += cout
        decoders += conv_flops(cin, 2, 3, px(lv))
        if lv < 6:  # transposed 4x4 convs from level lv+1: 2 -> 2 and features -> 2
            decoders += conv_flops(2, 2, 4, px(lv + 1)) + conv_flops(current[lv + 1] + sum(dense), 2, 4, px(lv + 1))
    rch = [current[2] + sum(dense), 128, 128, 128, 96, 64, 32, 2]
    refiner = sum(conv_flops(a, b, 3, px(2)) for a, b in zip(rch[:-1], rch[1:]))
    return {'extractor': 2 * extractor, 'decoders': decoders, 'refiner': refiner, 'correlation': corr}


def model_flops(h, w, n_seq=5, n_feat=128, extra_rbs=3, recons_rbs=20, scale=4, ksize=13, n_colors=3,
                compose=False):
    """FLOPs of the model's parts for one LR frame size (convolutions and linear layers).

    With ``compose`` the tail is ComposedTail's: one 5x5 LR conv plus the
    layers on 3-pixel strips along the four edges ('upsample' and
    'out_conv' then count those strips).
    """
    p, f = h * w, n_feat
    kp = ksize * ksize
    rcab = 2 * conv_flops(64, 64, 3, 1)  # per pixel: two 3x3 convs
    attention = conv_flops(64, 4, 1, 1) + conv_flops(4, 64, 1, 1)  # per RCAB, on the pooled 1x1 map
    kernel = (conv_flops(n_colors * n_seq, 64, 3, p) + 2 * rcab * p + 2 * rcab * kp + 4 * attention
              + conv_flops(64, 32, 3, kp) + conv_flops(32, 1, 3, kp) + 2 * 2 * kp * 1000)
    def layered(p):
        up, px = 0, p
        for _ in range(int(math.log2(scale))):
            up += conv_flops(f, 4 * f, 3, px)
            px *= 4
        return up, conv_flops(f, f, 3, px) + conv_flops(f, n_colors, 3, px)

    up, out = layered(2 * 3 * (h + w) if compose else p)
    flow = pwc_flops(h, w)
    return {
        'kernel_net': kernel,
        'flow': sum(flow.values()),
        'flow_parts': flow,
        'frame_features': conv_flops(n_colors, f, 3, p) + extra_rbs * 2 * conv_flops(f, f, 3, p),
        'fusion': conv_flops(f * n_seq, f, 3, p),
        'recons_trunk': recons_rbs * 2 * conv_flops(f, f, 3, p),
        'upsample': up,
        'out_conv': out,
        'composed_tail': conv_flops(f, n_colors * scale * scale, 5, p) if compose else 0,
    }


def clip_flops(h, w, windows, reuse, compose, n_seq=5):
    """Total FLOPs of the engine over a clip's windows (what VideoSR computes).

    With reuse, frame features and PWC-Net pyramids count once per frame and
    a frame present twice in a window is aligned once; without it every
    window computes 5 features and 4 flows (2 pyramids each).
    """
    m = model_flops(h, w, n_seq, compose=compose)
    pyramid = m['flow_parts']['extractor'] / 2
    flow_no_extractor = m['flow'] - m['flow_parts']['extractor']
    c = n_seq // 2
    total = 0
    for idx in windows:
        head = m['kernel_net'] + m['fusion'] + m['recons_trunk'] + m['upsample'] + m['out_conv'] + m['composed_tail']
        if reuse:
            total += head + len({idx[i] for i in range(n_seq) if i != c}) * flow_no_extractor
        else:
            total += head + (n_seq - 1) * m['flow'] + n_seq * m['frame_features']
    if reuse:
        total += len({i for idx in windows for i in idx}) * (m['frame_features'] + pyramid)
    return total
