"""KernelNet: estimates the blur kernel of a 5-frame window (softmax, sums to 1)."""
import jittor as jt
from jittor import nn

from ..ops.sampling import adaptive_avg_pool2d


class CALayer(nn.Module):
    """Channel attention: global average -> squeeze -> excite -> sigmoid gate."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1), nn.ReLU(),
            nn.Conv2d(channel // reduction, channel, 1), nn.Sigmoid())

    def execute(self, x):
        return x * self.conv_du(x.mean(dims=(2, 3), keepdims=True))


class RCAB(nn.Module):
    """Residual channel-attention block (RCAN), without batch norm."""

    def __init__(self, n_feat=64, kernel_size=3, reduction=16):
        super().__init__()
        p = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat, kernel_size, padding=p), nn.ReLU(),
            nn.Conv2d(n_feat, n_feat, kernel_size, padding=p), CALayer(n_feat, reduction))

    def execute(self, x):
        return self.body(x) + x


class KernelNet(nn.Module):
    def __init__(self, in_c=3, ksize=13):
        super().__init__()
        self.ksize = ksize
        self.in_conv = nn.Conv2d(in_c, 64, 3, padding=1)
        self.body1 = nn.Sequential(RCAB(64), RCAB(64))
        self.body2 = nn.Sequential(RCAB(64), RCAB(64), nn.Conv2d(64, 32, 3, padding=1),
                                   nn.Conv2d(32, 1, 3, padding=1))
        self.fc_net = nn.Sequential(nn.Linear(ksize * ksize, 1000), nn.Linear(1000, ksize * ksize))

    def execute(self, x):
        b = x.shape[0]
        out = self.body1(self.in_conv(x))
        # PyTorch's adaptive windows (Jittor's differ when H % ksize != 0)
        out = self.body2(adaptive_avg_pool2d(out, self.ksize))
        out = self.fc_net(out.reshape(b, self.ksize * self.ksize))
        # the reference's nn.Softmax() without dim acts on dim 1 for 2-D input.
        # Written out (as Jittor's nn.softmax computes it on the CPU): on CUDA
        # nn.softmax runs a CUB kernel that does not compile with CUDA 13.
        out = (out - out.max(1, keepdims=True)).exp()
        return (out / out.sum(1, keepdims=True)).reshape(b, 1, self.ksize, self.ksize)

    forward = execute
