"""The zoo models of libs/train in PyTorch, built from the same ModelConfig JSON.

Parameter and buffer names, shapes and registration order are those of libs/train's Registry (checked by
tests/test_zoo.py against tests/fixtures/zoo-shapes.json), so a state moves between the two engines by name.
Weights start from PyTorch's default initialization: the trainer sends the job's initial weights with
`set_state`, so the engine never relies on its own initialization.

The layouts follow the reference code (the HRNet repository's pose_resnet and pose_hrnet); the comments on the
TypeScript side (libs/train/src/zoo) explain the architectures.
"""
import torch
import torch.nn.functional as F
from torch import nn

RESNET_LAYOUTS = {18: ("BASIC", [2, 2, 2, 2]), 34: ("BASIC", [3, 4, 6, 3]), 50: ("BOTTLENECK", [3, 4, 6, 3]), 101: ("BOTTLENECK", [3, 4, 23, 3]), 152: ("BOTTLENECK", [3, 8, 36, 3])}


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 ConvTranspose2d whose forward can run as a 3x3 convolution to 4·Cout channels followed by
    pixel_shuffle(2). Debian's CPU build of torch runs conv_transpose2d some 30x slower than the equivalent
    convolution; the parameters stay ConvTranspose2d's (`weight` [Cin, Cout, k, k], `bias`), so state dicts
    and initialization are unchanged. `subpixel` picks the path (the engine turns it off on CUDA, where cuDNN's
    transposed convolution is fast).

    Output pixel 2m+a (phase a) of a transposed convolution with padding p reads input m+d through kernel tap
    a + p − 2d; for the stride-2 layers of the zoo (kernel 4 / padding 1, 3 / 1 with output padding 1, 2 / 0)
    every output is 2·input and d ∈ {−1, 0, 1}, so each phase is a 3x3 convolution with some taps zero.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.subpixel = True
        self._taps = self._phase_taps()

    def _phase_taps(self):
        k, p = self.kernel_size[0], self.padding[0]
        ok = (
            self.stride == (2, 2)
            and self.kernel_size[0] == self.kernel_size[1]
            and self.padding[0] == self.padding[1]
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.output_padding[0] == self.output_padding[1]
            and -2 * p + k + self.output_padding[0] == 2  # (H−1)·2 − 2p + k + output padding = 2H
        )
        if not ok:
            return None
        # taps[a][d + 1]: the kernel index phase a reads at offset d, or k (a zero tap added by forward).
        taps = [[a + p - 2 * d if 0 <= a + p - 2 * d < k else k for d in (-1, 0, 1)] for a in (0, 1)]
        if sorted({t for row in taps for t in row if t < k}) != list(range(k)):
            return None
        return torch.tensor(taps)

    def forward(self, x, output_size=None):
        if not self.subpixel or self._taps is None or output_size is not None:
            return super().forward(x, output_size)
        w = F.pad(self.weight, (0, 1, 0, 1))  # the zero tap at index k
        taps = self._taps.to(w.device)
        rows = taps[:, None, :, None]  # [phase a, 1, u, 1]
        cols = taps[None, :, None, :]  # [1, phase b, 1, v]
        kernel = w[:, :, rows, cols]  # [Cin, Cout, a, b, u, v]
        cin, cout = kernel.shape[:2]
        kernel = kernel.permute(1, 2, 3, 0, 4, 5).reshape(cout * 4, cin, 3, 3)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, kernel, bias, 1, 1), 2)


def set_subpixel(model, enabled):
    """Chooses the deconvolution path of every SubpixelConvTranspose2d in `model`."""
    for module in model.modules():
        if isinstance(module, SubpixelConvTranspose2d):
            module.subpixel = enabled


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_layer(block, cin, planes, blocks, stride):
    """A stage of residual blocks (the first may change stride and width) and its output width."""
    layers = []
    for i in range(blocks):
        layers.append(block(cin, planes, stride if i == 0 else 1))
        cin = planes * block.expansion
    return nn.Sequential(*layers), cin


class ConvBnRelu(nn.Sequential):
    def __init__(self, cin, cout, stride=1, relu=True, kernel=3):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


def deconv_bn(cin, cout, kernel=4, bias=False):
    padding, output_padding = deconv_padding(kernel)
    return nn.Sequential(SubpixelConvTranspose2d(cin, cout, kernel, 2, padding, output_padding, bias=bias), nn.BatchNorm2d(cout))


def deconv_padding(kernel):
    """Padding and output padding that make a stride-2 deconvolution exactly double the size (the reference's table)."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"unsupported deconvolution kernel {kernel} (2, 3 or 4)")


def lite_backbone(module, channels, blocks_per_stage=1):
    """The lite network up to its fused 1/4 features (libs/train's LiteFeatures), as attributes of `module` so
    that the heatmap model and the detector share its parameter names."""
    c0, c1, c2 = channels[:3]
    context = len(channels) == 4
    # Built before the rest (the golden fixtures' random draws were made in this order) but registered after
    # layer2, where libs/train's registry has them.
    if context:
        c3 = channels[3]
        layer3, _ = make_layer(BasicBlock, c2, c3, blocks_per_stage, 2)
        up16 = deconv_bn(c3, c2)
        fuse16 = nn.Sequential(nn.Conv2d(c2, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2))
    module.conv1 = nn.Conv2d(3, c0, 3, 2, 1, bias=False)
    module.bn1 = nn.BatchNorm2d(c0)
    module.conv2 = nn.Conv2d(c0, c1, 3, 2, 1, bias=False)
    module.bn2 = nn.BatchNorm2d(c1)
    module.layer1, _ = make_layer(BasicBlock, c1, c1, blocks_per_stage, 1)
    module.layer2, _ = make_layer(BasicBlock, c1, c2, blocks_per_stage, 2)
    module.context = context
    if context:
        module.layer3, module.up16, module.fuse16 = layer3, up16, fuse16
    module.up = deconv_bn(c2, c1)
    module.fuse = nn.Sequential(nn.Conv2d(c1, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
    module.relu = nn.ReLU()


def lite_features(module, x):
    """The fused 1/4 features of a module built by lite_backbone, and the stem's 1/2 ones."""
    half = module.relu(module.bn1(module.conv1(x)))
    quarter = module.layer1(module.relu(module.bn2(module.conv2(half))))
    eighth = module.layer2(quarter)
    if module.context:
        eighth = module.relu(module.fuse16(module.relu(module.up16(module.layer3(eighth))) + eighth))
    up = module.relu(module.up(eighth))
    return module.relu(module.fuse(up + quarter)), half


class LitePose(nn.Module):
    def __init__(self, channels, k, heatmap_stride=4, blocks_per_stage=1):
        super().__init__()
        c0, c1 = channels[:2]
        lite_backbone(self, channels, blocks_per_stage)
        self.half = heatmap_stride == 2
        if self.half:
            self.up2 = deconv_bn(c1, c1)
            self.skip2 = nn.Sequential(nn.Conv2d(c0, c1, 1, 1, 0, bias=False), nn.BatchNorm2d(c1))
            self.fuse2 = nn.Sequential(nn.Conv2d(c1, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
        self.final_layer = nn.Conv2d(c1, k, 1)

    def forward(self, x):
        fused, half = lite_features(self, x)
        if self.half:
            fused = self.relu(self.fuse2(self.relu(self.up2(fused)) + self.relu(self.skip2(half))))
        return self.final_layer(fused)


class DetectorLite(nn.Module):
    """libs/train's DetectorLite: the lite backbone's 1/4 features and CenterNet's head there ("hm" center
    logits per class, "wh" box sizes and "reg" sub-cell offsets in grid cells), initialized as CenterNet's
    (center bias −2.19, the regression heads near zero). forward returns (center logits, sizes, offsets)."""

    def __init__(self, channels, num_classes=1, head_channels=None, blocks_per_stage=1):
        super().__init__()
        lite_backbone(self, channels, blocks_per_stage)
        c1 = channels[1]
        hidden = head_channels or c1

        def branch(out):
            return nn.Sequential(nn.Conv2d(c1, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, out, 1))

        self.hm = branch(num_classes)
        self.wh = branch(2)
        self.reg = branch(2)
        with torch.no_grad():
            self.hm[2].bias.fill_(-2.19)
            for head in (self.wh, self.reg):
                for conv in (head[0], head[2]):
                    nn.init.normal_(conv.weight, std=0.001)
                    nn.init.zeros_(conv.bias)

    def forward(self, x):
        fused, _ = lite_features(self, x)
        return self.hm(fused), self.wh(fused), self.reg(fused)


class SimpleBaseline(nn.Module):
    def __init__(self, depth, width, filters, k, kernels=(4, 4, 4), deconv_bias=False, final_kernel=1):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {', '.join(map(str, RESNET_LAYOUTS))}, got {depth}")
        block_name, blocks = RESNET_LAYOUTS[depth]
        block = BLOCKS[block_name]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i in range(4):
            layer, cin = make_layer(block, cin, width * 2**i, blocks[i], 1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", layer)
        deconv = []
        for f, kernel in zip(filters, kernels):
            padding, output_padding = deconv_padding(kernel)
            deconv += [SubpixelConvTranspose2d(cin, f, kernel, 2, padding, output_padding, bias=deconv_bias), nn.BatchNorm2d(f), nn.ReLU()]
            cin = f
        self.deconv_layers = nn.Sequential(*deconv)
        self.final_layer = nn.Conv2d(cin, k, final_kernel, 1, 1 if final_kernel == 3 else 0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks, then every output fuses all inputs. `channels_in` is updated in
    place to the branches' output widths."""

    def __init__(self, channels_in, channels, blocks, multi_scale_output, block=BasicBlock):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList()
        for i in range(n):
            layer, channels_in[i] = make_layer(block, channels_in[i], channels[i], blocks[i], 1)
            self.branches.append(layer)
        self.fuse_layers = nn.ModuleList()
        for i in range(n if multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels_in[j], channels_in[i], 1, bias=False), nn.BatchNorm2d(channels_in[i]), nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for s in range(i - j):
                        last = s == i - j - 1
                        steps.append(ConvBnRelu(channels_in[j], channels_in[i] if last else channels_in[j], 2, relu=not last))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU()

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for row in self.fuse_layers:
            y = None
            for j, layer in enumerate(row):
                contribution = xs[j] if layer is None else layer(xs[j])
                y = contribution if y is None else y + contribution
            out.append(self.relu(y))
        return out


def hrnet_stages(width):
    """The reference stage layout of HRNet-W<width> (libs/train's hrnetStages)."""
    return [
        {"numModules": 1, "numBranches": 2, "block": "BASIC", "numBlocks": [4, 4], "numChannels": [width, width * 2]},
        {"numModules": 4, "numBranches": 3, "block": "BASIC", "numBlocks": [4, 4, 4], "numChannels": [width, width * 2, width * 4]},
        {"numModules": 3, "numBranches": 4, "block": "BASIC", "numBlocks": [4, 4, 4, 4], "numChannels": [width, width * 2, width * 4, width * 8]},
    ]


class Hrnet(nn.Module):
    def __init__(self, stages, stem, planes, k, final_kernel=1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.layer1, cin = make_layer(Bottleneck, stem, planes, 4, 1)
        previous = [cin]
        self.num_stages = len(stages)
        for s, stage in enumerate(stages):
            block = BLOCKS[stage["block"]]
            wanted = [c * block.expansion for c in stage["numChannels"]]
            transition = nn.ModuleList()
            for i, c in enumerate(wanted):
                if i < len(previous):
                    transition.append(None if previous[i] == c else ConvBnRelu(previous[i], c))
                else:
                    steps = []
                    for j in range(i + 1 - len(previous)):
                        steps.append(ConvBnRelu(previous[-1], c if j == i - len(previous) else previous[-1], 2))
                    transition.append(nn.Sequential(*steps))
            setattr(self, f"transition{s + 1}", transition)
            channels_in = list(wanted)
            modules = []
            for m in range(stage["numModules"]):
                last = s == len(stages) - 1 and m == stage["numModules"] - 1
                modules.append(HighResolutionModule(channels_in, stage["numChannels"], stage["numBlocks"], not last, block))
            setattr(self, f"stage{s + 2}", nn.Sequential(*modules))
            previous = channels_in
        self.final_layer = nn.Conv2d(previous[0], k, final_kernel, 1, 1 if final_kernel == 3 else 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(self.relu(self.bn2(self.conv2(x))))
        branches = [x]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s + 1}")
            # New branches come from the lowest-resolution existing one.
            branches = [branches[min(i, len(branches) - 1)] if t is None else t(branches[min(i, len(branches) - 1)]) for i, t in enumerate(transition)]
            for module in getattr(self, f"stage{s + 2}"):
                branches = module(branches)
        return self.final_layer(branches[0])


def model_config_problems(config):
    """Problems with a ModelConfig (libs/train's modelConfigProblems, same wording); empty when it can be built."""
    problems = []
    arch = config.get("architecture")
    keys = (("inputWidth", "input width"), ("inputHeight", "input height")) + ((("numKeypoints", "number of keypoints"),) if arch != "detector-lite" else ())
    for key, what in keys:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"{what} must be a positive integer, got {value}")
    if arch not in ("lite", "simplebaseline", "hrnet", "detector-lite"):
        problems.append(f"unknown architecture {arch}")
        return problems
    lite = config.get("lite") or {}
    detector = config.get("detector") or {}
    if arch == "detector-lite":
        divisor = 16 if len(detector.get("channels", [0, 0, 0, 0])) == 4 else 8
        if len(detector.get("channels", [0, 0, 0, 0])) not in (3, 4):
            problems.append(f"the detector's backbone needs 3 or 4 widths, got {len(detector['channels'])}")
        for key, what in (("numClasses", "detector classes"), ("headChannels", "detector head width"), ("blocksPerStage", "detector blocks per stage")):
            value = detector.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                problems.append(f"{what} must be a positive integer, got {value}")
    else:
        divisor = (16 if len(lite.get("channels", [0, 0, 0])) == 4 else 8) if arch == "lite" else 32
    w, h = config.get("inputWidth"), config.get("inputHeight")
    if isinstance(w, int) and isinstance(h, int) and (w % divisor or h % divisor):
        problems.append(f"{arch} needs an input size divisible by {divisor}, got {w}x{h}")
    stride = lite.get("heatmapStride")
    if stride is not None and (arch != "lite" or stride not in (2, 4)):
        problems.append(f"a heatmap stride of {stride} is not possible: the lite model outputs at 1/4 or 1/2 of the input, the others at 1/4")
    if arch == "lite" and len(lite.get("channels", [0, 0, 0])) not in (3, 4):
        problems.append("lite channels need 3 or 4 widths")
    if arch == "simplebaseline":
        sb = config.get("simpleBaseline") or {}
        depth = sb.get("depth", 50)
        if depth not in RESNET_LAYOUTS:
            problems.append(f"ResNet depth must be one of {', '.join(map(str, RESNET_LAYOUTS))}, got {depth}")
        kernels = sb.get("deconvKernels", [4, 4, 4])
        for kernel in kernels:
            try:
                deconv_padding(kernel)
            except ValueError as error:
                problems.append(str(error))
        if len(sb.get("deconvFilters", [256, 256, 256])) != 3 or len(kernels) != 3:
            problems.append("SimpleBaseline needs three deconvolution layers (filters and kernels)")
    if arch == "hrnet":
        hr = config.get("hrnet") or {}
        for i, stage in enumerate(hr.get("stages") or hrnet_stages(hr.get("width", 32))):
            n = stage["numBranches"]
            if len(stage["numBlocks"]) != n or len(stage["numChannels"]) != n:
                problems.append(f"HRNet stage {i + 2}: NUM_BLOCKS and NUM_CHANNELS need one entry per branch ({n})")
            if n != i + 2:
                problems.append(f"HRNet stage {i + 2} must have {i + 2} branches, got {n}")
    return problems


def heatmap_stride(config):
    """Input pixels per heatmap pixel: 4 for every model but a lite one configured for 2."""
    return (config.get("lite") or {}).get("heatmapStride", 4) if config["architecture"] == "lite" else 4


def build_model(config):
    """The zoo model of a libs/train ModelConfig (a dict of its JSON), with libs/train's defaults; raises
    ValueError naming every problem of an invalid config."""
    problems = model_config_problems(config)
    if problems:
        raise ValueError(f"invalid model config: {'; '.join(problems)}")
    arch = config["architecture"]
    if arch == "detector-lite":
        d = config.get("detector") or {}
        return DetectorLite(d.get("channels", [16, 32, 64, 128]), d.get("numClasses", 1), d.get("headChannels"), d.get("blocksPerStage", 1))
    k = config["numKeypoints"]
    if arch == "lite":
        lite = config.get("lite") or {}
        return LitePose(lite.get("channels", [16, 32, 64]), k, lite.get("heatmapStride", 4), lite.get("blocksPerStage", 1))
    if arch == "simplebaseline":
        sb = config.get("simpleBaseline") or {}
        return SimpleBaseline(
            sb.get("depth", 50),
            sb.get("baseWidth", 64),
            sb.get("deconvFilters", [256, 256, 256]),
            k,
            sb.get("deconvKernels", [4, 4, 4]),
            sb.get("deconvWithBias", False),
            sb.get("finalConvKernel", 1),
        )
    hr = config.get("hrnet") or {}
    return Hrnet(hr.get("stages") or hrnet_stages(hr.get("width", 32)), hr.get("stemWidth", 64), hr.get("stage1Planes", 64), k, hr.get("finalConvKernel", 1))


def joints_mse(output, target, weight):
    """The HRNet reference's JointsMSELoss(use_target_weight=True), written per joint as it does:
    1/K · Σ_k 0.5 · mean_{b,pixels}((w_bk·(pred − gt))²)."""
    b, k = output.shape[:2]
    pred = output.reshape(b, k, -1)
    gt = target.reshape(b, k, -1)
    loss = 0
    for j in range(k):
        w = weight[:, j : j + 1]
        loss = loss + 0.5 * F.mse_loss(pred[:, j] * w, gt[:, j] * w)
    return loss / k


def distill_mse(output, teacher):
    """0.5 · mean((pred − teacher)²) (libs/train's distillMseLoss)."""
    return 0.5 * F.mse_loss(output, teacher)


def distill_kl(output, teacher, temperature=1.0):
    """T² · mean over heatmaps of KL(softmax(teacher/T) ‖ softmax(pred/T)) over each heatmap's pixels
    (libs/train's distillKlLoss on [B, K, H·W])."""
    b, k = output.shape[:2]
    log_p = F.log_softmax(output.reshape(b, k, -1) / temperature, dim=-1)
    log_q = F.log_softmax(teacher.reshape(b, k, -1) / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum()
    return kl * (temperature * temperature / (b * k))


def is_detector(config):
    return config.get("architecture") == "detector-lite"


def detector_loss_weights(config):
    """The size and offset weights of the detector's loss (libs/train's defaults: CenterNet's 0.1 and 1)."""
    d = config.get("detector") or {}
    return float(d.get("sizeWeight", 0.1)), float(d.get("offsetWeight", 1.0))


def center_focal_loss(logits, target):
    """CenterNet's focal loss (libs/train's centerFocalLoss): p = clamp(σ(x), 1e-4, 1 − 1e-4),
    −1/max(1, P) · Σ [gt = 1]·(1 − p)²·log p + [gt < 1]·(1 − gt)⁴·p²·log(1 − p)."""
    p = torch.clamp(logits.sigmoid(), min=1e-4, max=1 - 1e-4)
    pos = target.eq(1).to(p.dtype)
    neg = target.lt(1).to(p.dtype)
    total = (torch.log(p) * (1 - p) ** 2 * pos).sum() + (torch.log(1 - p) * p**2 * (1 - target) ** 4 * neg).sum()
    return -total / torch.clamp(pos.sum(), min=1)


def masked_l1(pred, target, mask):
    """CenterNet's RegL1Loss on dense maps (libs/train's maskedL1Loss): Σ mask·|pred − target| / (C·Σ mask + 1e-4)."""
    return (torch.abs(pred - target) * mask).sum() / (mask.sum() * pred.shape[1] + 1e-4)


def detector_loss(outputs, center_target, size_target, offset_target, reg_mask, size_weight=0.1, offset_weight=1.0):
    logits, sizes, offsets = outputs
    return center_focal_loss(logits, center_target) + size_weight * masked_l1(sizes, size_target, reg_mask) + offset_weight * masked_l1(offsets, offset_target, reg_mask)
