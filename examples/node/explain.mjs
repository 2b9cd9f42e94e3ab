#!/usr/bin/env node
// Explain an image with an explainer written by `ort-cam export` (Python is not needed here).
//
//   node explain.mjs IMAGE.png explainer.onnx out.png [--target N] [--json out.json]
//
// IMAGE must be at the model's input size (the explainer's `image` input, uint8 [H, W, 3]
// RGB): resize or crop it first the way the model's preprocessing says. out.png gets the
// image and one overlay per method side by side; --json writes every output as numbers.

import fs from 'node:fs';
import ort from 'onnxruntime-node';
import { PNG } from 'pngjs';

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--target' || argv[i] === '--json') args[argv[i].slice(2)] = argv[++i];
    else if (argv[i].startsWith('--')) fail(`unknown option ${argv[i]}`);
    else args.positional.push(argv[i]);
  }
  if (args.positional.length !== 3) {
    fail('usage: node explain.mjs IMAGE.png explainer.onnx out.png [--target N] [--json FILE]');
  }
  [args.image, args.model, args.out] = args.positional;
  return args;
}

/** RGB bytes of a PNG file (alpha dropped, as PIL's convert("RGB") does). */
function readRgb(path) {
  const png = PNG.sync.read(fs.readFileSync(path));
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let p = 0; p < png.width * png.height; p++) {
    for (let c = 0; c < 3; c++) rgb[3 * p + c] = png.data[4 * p + c];
  }
  return { rgb, width: png.width, height: png.height };
}

/** matplotlib's "jet" colour map, as ort_cam's panels use, for v in [0, 1]. */
function jet(v) {
  const ramp = (points) => {
    for (let i = 1; i < points.length; i++) {
      const [x0, y0] = points[i - 1];
      const [x1, y1] = points[i];
      if (v <= x1) return y0 + ((y1 - y0) * (v - x0)) / (x1 - x0);
    }
    return points[points.length - 1][1];
  };
  return [
    ramp([[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]]),
    ramp([[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]]),
    ramp([[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]]),
  ];
}

/** The image, then the image under each map (alpha 0.5), side by side. */
function writeStrip(path, { rgb, width, height }, maps) {
  const panels = [null, ...maps];
  const png = new PNG({ width: width * panels.length, height });
  panels.forEach((map, k) => {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const p = y * width + x;
        const color = map ? jet(Math.min(Math.max(map[p], 0), 1)) : null;
        const o = 4 * (y * png.width + k * width + x);
        for (let c = 0; c < 3; c++) {
          const pixel = rgb[3 * p + c] / 255;
          const v = color ? 0.5 * pixel + 0.5 * color[c] : pixel;
          png.data[o + c] = Math.round(255 * v);
        }
        png.data[o + 3] = 255;
      }
    }
  });
  fs.writeFileSync(path, PNG.sync.write(png));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const image = readRgb(args.image);
  const session = await ort.InferenceSession.create(args.model, { logSeverityLevel: 3 });
  const want = session.inputMetadata?.find((m) => m.name === 'image')?.shape;
  if (!session.inputNames.includes('image')) {
    fail(`${args.model} takes ${session.inputNames.join(', ')}, not pixels (export with --input pixels)`);
  }
  if (want && (want[0] !== image.height || want[1] !== image.width)) {
    fail(`${args.image} is ${image.width}x${image.height}; the explainer takes ${want[1]}x${want[0]} (resize it first)`);
  }
  const feeds = { image: new ort.Tensor('uint8', image.rgb, [image.height, image.width, 3]) };
  const optional = !session.inputNames.includes('target_index');
  if (args.target !== undefined && optional) {
    fail('this explainer has target_index as an optional input, which the JavaScript API cannot feed; re-export it with --required-inputs');
  }
  if (!optional) {
    feeds.target_index = new ort.Tensor('int64', BigInt64Array.from([BigInt(args.target ?? -1)]), []);
  }
  if (session.inputNames.includes('baseline')) { // required inputs: black, the default
    feeds.baseline = new ort.Tensor('uint8', new Uint8Array(image.rgb.length), [image.height, image.width, 3]);
  }
  const t0 = performance.now();
  const r = await session.run(feeds);
  const seconds = (performance.now() - t0) / 1000;
  const methods = session.outputNames.filter((n) => n.endsWith('_map')).map((n) => n.slice(0, -4));
  writeStrip(args.out, image, methods.map((m) => r[`${m}_map`].data));
  const target = Number(r.target.data[0]);
  const gap = r.rsi_completeness_gap ? `, RSI gap ${(100 * r.rsi_completeness_gap.data[0]).toPrecision(2)}%` : '';
  console.log(`class ${target}, score ${r.scores.data[target].toPrecision(4)}${gap}, ` +
              `${seconds.toFixed(3)} s -> ${args.out} (${['image', ...methods].join(' | ')})`);
  if (args.json) {
    const out = { seconds };
    for (const name of session.outputNames) {
      const data = Array.from(r[name].data, Number);
      out[name] = r[name].dims.length === 0 ? data[0] : data;
    }
    fs.writeFileSync(args.json, JSON.stringify(out));
  }
}

main().catch((e) => fail(e.message.split('\n')[0]));
