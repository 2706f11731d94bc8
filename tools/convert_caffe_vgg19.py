#!/usr/bin/python3
"""Convert Caffe's VGG_ILSVRC_19_layers.caffemodel (the VGG19 jcjohnson/neural-style uses) to a
safetensors file for `cudl style --model-type caffe`.

    apt-get install python3-protobuf        # Debian's package; no protoc, no Caffe needed
    /usr/bin/python3 tools/convert_caffe_vgg19.py VGG_ILSVRC_19_layers.caffemodel vgg19-caffe.safetensors

What it does:
- reads the NetParameter with a minimal schema built here (only the fields it needs): the old
  V1 `layers` (field 2, the format of the 2014 VGG release) and the new `layer` (field 100),
  each with its name and blobs (BlobProto: legacy num/channels/height/width or shape, data);
- renames Caffe's layers to torchvision's: conv1_1 -> features.0, ..., conv5_4 -> features.34,
  fc6/fc7/fc8 -> classifier.0/3/6 (fc weights reshaped to [out, in]);
- reverses conv1_1's input channels: Caffe's network reads BGR, cudl feeds RGB. The mean
  subtraction and the 0-255 scale are in cudl's network (--model-type caffe), not in the file.
Layers the file lacks are left out (a file with only the first blocks converts; cudl then needs
style and content layers within them). Exit status 1 with one line on a bad file.
"""
import json
import os
import struct
import sys
from array import array

# VGG19's convolutions in order, and the torchvision feature index of each (a ReLU follows each
# convolution and a pooling ends each block, so indices skip).
BLOCKS = [2, 2, 4, 4, 4]


def torchvision_names():
    names, index = {}, 0
    for b, convs in enumerate(BLOCKS, start=1):
        for c in range(1, convs + 1):
            names[f"conv{b}_{c}"] = f"features.{index}"
            index += 2  # conv, relu
        index += 1  # pool
    names.update({"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"})
    return names


def caffe_messages():
    """NetParameter, LayerParameter, V1LayerParameter, BlobProto, BlobShape: just the fields used,
    with caffe.proto's field numbers (protobuf skips the others)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="cudl_caffe_min.proto", package="caffe", syntax="proto2")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("BlobShape", [("dim", 1, F.TYPE_INT64, rep, None, True)])
    message("BlobProto", [
        ("num", 1, F.TYPE_INT32, opt, None, False),
        ("channels", 2, F.TYPE_INT32, opt, None, False),
        ("height", 3, F.TYPE_INT32, opt, None, False),
        ("width", 4, F.TYPE_INT32, opt, None, False),
        ("data", 5, F.TYPE_FLOAT, rep, None, True),
        ("shape", 7, F.TYPE_MESSAGE, opt, ".caffe.BlobShape", False),
    ])
    message("LayerParameter", [
        ("name", 1, F.TYPE_STRING, opt, None, False),
        ("type", 2, F.TYPE_STRING, opt, None, False),
        ("blobs", 7, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
    ])
    message("V1LayerParameter", [
        ("name", 4, F.TYPE_STRING, opt, None, False),
        ("type", 5, F.TYPE_INT32, opt, None, False),  # an enum in caffe.proto; 4 CONVOLUTION, 14 INNER_PRODUCT
        ("blobs", 6, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
    ])
    message("NetParameter", [
        ("name", 1, F.TYPE_STRING, opt, None, False),
        ("layers", 2, F.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
        ("layer", 100, F.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.x python API (Debian 12's 3.21 / 4.21)
        factory = message_factory.MessageFactory(pool)
        return {n: factory.GetPrototype(pool.FindMessageTypeByName("caffe." + n)) for n in ("NetParameter",)}
    return {"NetParameter": get(pool.FindMessageTypeByName("caffe.NetParameter"))}


def blob_shape(blob):
    if blob.HasField("shape") and len(blob.shape.dim) > 0:
        return [int(d) for d in blob.shape.dim]
    return [blob.num, blob.channels, blob.height, blob.width]


def convert(src, dst):
    try:
        NetParameter = caffe_messages()["NetParameter"]
    except ImportError:
        raise SystemExit("convert_caffe_vgg19: needs Debian's python3-protobuf (apt-get install python3-protobuf; "
                         "run with /usr/bin/python3)")
    with open(src, "rb") as f:
        raw = f.read()
    net = NetParameter()
    try:
        net.ParseFromString(raw)
    except Exception as e:  # DecodeError and friends: one line, naming the file
        raise SystemExit(f"convert_caffe_vgg19: '{src}' is not a Caffe model (protobuf NetParameter): {e}")
    names = torchvision_names()
    tensors = {}
    for layer in list(net.layers) + list(net.layer):
        if layer.name not in names:
            continue  # ReLU, pooling, dropout, softmax: no weights
        target = names[layer.name]
        if len(layer.blobs) != 2:
            raise SystemExit(f"convert_caffe_vgg19: '{src}': layer {layer.name} has {len(layer.blobs)} blobs, "
                             "expected 2 (weights, bias)")
        w, b = layer.blobs
        wshape, bshape = blob_shape(w), blob_shape(b)
        out = wshape[-4] if len(wshape) >= 4 and layer.name.startswith("conv") else None
        if layer.name.startswith("conv"):
            if len(wshape) != 4:
                raise SystemExit(f"convert_caffe_vgg19: '{src}': {layer.name} weights have shape {wshape}, expected 4-D")
        else:  # V1 stores fc weights as [1, 1, out, in]
            dims = [d for d in wshape if d != 1] if len(wshape) > 2 else wshape
            if len(dims) != 2:
                raise SystemExit(f"convert_caffe_vgg19: '{src}': {layer.name} weights have shape {wshape}, expected 2-D")
            wshape = dims
            out = dims[0]
        count = 1
        for d in wshape:
            count *= d
        if len(w.data) != count:
            raise SystemExit(f"convert_caffe_vgg19: '{src}': {layer.name} has {len(w.data)} weights for shape {wshape}")
        if len(b.data) != out:
            raise SystemExit(f"convert_caffe_vgg19: '{src}': {layer.name} has {len(b.data)} biases for {out} outputs "
                             f"(bias blob shape {bshape})")
        weights = array("f", w.data)  # fc6 alone has 103M values: no Python list of floats
        if layer.name == "conv1_1":
            # [out, 3, kh, kw] with input channels B, G, R -> R, G, B.
            o, c, kh, kw = wshape
            plane = kh * kw
            flipped = array("f")
            for k in range(o):
                base = k * c * plane
                for ch in reversed(range(c)):
                    flipped.extend(weights[base + ch * plane: base + (ch + 1) * plane])
            weights = flipped
        tensors[target + ".weight"] = (wshape, weights)
        tensors[target + ".bias"] = ([out], array("f", b.data))
    if not tensors:
        raise SystemExit(f"convert_caffe_vgg19: '{src}' holds none of VGG19's layers (conv1_1 ... fc8)")
    write_safetensors(dst, tensors, src)
    return sorted(tensors)


def write_safetensors(path, tensors, source):
    header, offset, blobs = {}, 0, []
    for name, (shape, values) in tensors.items():
        if sys.byteorder != "little":
            values = array("f", values)
            values.byteswap()
        data = values.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"source": source, "format": "caffe VGG19, conv1_1 input channels in RGB order"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"  # written whole, then renamed: no partial file on failure
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: convert_caffe_vgg19.py VGG_ILSVRC_19_layers.caffemodel OUTPUT.safetensors")
    names = convert(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}: {len(names)} tensors")


if __name__ == "__main__":
    main()
