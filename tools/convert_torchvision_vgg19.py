#!/usr/bin/env python3
"""Convert torchvision's pretrained VGG19 to a safetensors file that `cudl style` and
`cudl classify --model vgg19` load (names features.N.weight/bias, classifier.N.weight/bias).

    pip install torch torchvision
    python tools/convert_torchvision_vgg19.py vgg19.safetensors

It downloads torchvision's IMAGENET1K_V1 weights (548 MB) on first use, so it needs network
access and was not run where cudl's tests run (no weights can be downloaded there). Instead of
the `safetensors` package it uses the few lines of writer below, so torch is the only dependency.
Alternative without torch: timm's `vgg19.tv_in1k` model.safetensors holds the
same tensors under the same features.* names and loads as is.
"""
import json
import struct
import sys


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        data = t.detach().to("cpu").float().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"source": "torchvision.models.vgg19(weights='IMAGENET1K_V1')"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data buffer 8-byte aligned, like the reference writer
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: convert_torchvision_vgg19.py OUTPUT.safetensors")
    import torchvision

    model = torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1)
    write_safetensors(sys.argv[1], model.state_dict())
    print(f"wrote {sys.argv[1]}")


if __name__ == "__main__":
    main()
