"""A small ResNet written out by hand (conv/bn/relu/maxpool, residual adds with a strided 1x1
projection, a MobileNet-style depthwise convolution with ReLU6, global average pooling, flatten, a
linear head), exported with torch.onnx.export for
tests/test_onnx_torch.cpp. Writes MODEL.onnx, the input batch and PyTorch's logits as raw
little-endian float32 (INPUT.bin: [2, 3, 32, 32], LOGITS.bin: [2, 10]).

Usage: torch_resnet.py MODEL.onnx INPUT.bin LOGITS.bin [OPSET [unfused]]
"unfused" keeps each BatchNormalization a node of its own (torch folds them into the convolutions by
default).
"""
import sys

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = Block(8, 8, 1)
        # Exported as a Conv with group=8 and a Clip(0, 6).
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.layer2 = Block(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.depthwise(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def main():
    model_path, input_path, logits_path = sys.argv[1:4]
    opset = int(sys.argv[4]) if len(sys.argv) > 4 else 13
    unfused = len(sys.argv) > 5 and sys.argv[5] == "unfused"
    torch.manual_seed(0)
    model = SmallResNet()
    # Running statistics away from 0/1, so the batch norms' folding is exercised.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    mode = torch.onnx.TrainingMode.PRESERVE if unfused else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, x, model_path, opset_version=opset, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, training=mode)
    x.numpy().astype("<f4").tofile(input_path)
    logits.numpy().astype("<f4").tofile(logits_path)


if __name__ == "__main__":
    main()
