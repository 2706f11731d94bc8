// Runs an ONNX model in onnxruntime (the npm package onnxruntime-node) for
// tests/test_onnx_runtime.cpp: reads N*C*H*W little-endian float32 values from INPUT.bin, writes
// the first output's values to OUTPUT.bin. NODE_PATH names the folder holding node_modules' packages.
// Usage: node ort_run.js MODEL.onnx INPUT.bin N C H W OUTPUT.bin
const fs = require('fs');
const ort = require('onnxruntime-node');

(async () => {
  const [model, input, n, c, h, w, output] = process.argv.slice(2);
  const dims = [n, c, h, w].map(Number);
  const bytes = fs.readFileSync(input);
  const x = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const session = await ort.InferenceSession.create(model);
  const result = await session.run({[session.inputNames[0]]: new ort.Tensor('float32', x, dims)});
  const y = result[session.outputNames[0]].data;
  fs.writeFileSync(output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
