#!/usr/bin/env node
// Explain an image with an explainer written by `ort-cam export` (Python is not needed here).
//
//   node explain.mjs IMAGE.png explainer.onnx out.png [--target N] [--mask MASK.png]
//                    [--json out.json]
//
// IMAGE must be at the model's input size (the explainer's `image` input, uint8 [H, W, 3]
// RGB): resize or crop it first the way the model's preprocessing says. out.png gets the
// image and one overlay per method side by side; --json writes every output as numbers (a
// NaN as null: RSI's gap where y at x equals y at the baseline, which the line prints as n/a).
// A segmentation model's explainer (`ort-cam export --target-kind segment`) explains class N
// (default: the class with the largest region) over MASK.png's nonzero pixels (a PNG on the
// output's grid; default: the pixels whose argmax is the class), and out.png shows the mask
// the explainer used after the image.

import fs from 'node:fs';
import ort from 'onnxruntime-node';
import { PNG } from 'pngjs';
import { gapText, overlay, rgbOfRgba } from '../web/overlay.mjs';

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (['--target', '--json', '--mask'].includes(argv[i])) args[argv[i].slice(2)] = argv[++i];
    else if (argv[i].startsWith('--')) fail(`unknown option ${argv[i]}`);
    else args.positional.push(argv[i]);
  }
  if (args.positional.length !== 3) {
    fail('usage: node explain.mjs IMAGE.png explainer.onnx out.png [--target N] [--mask MASK.png] [--json FILE]');
  }
  [args.image, args.model, args.out] = args.positional;
  return args;
}

/** RGB bytes of a PNG file (alpha dropped, as PIL's convert("RGB") does). */
function readRgb(path) {
  const png = PNG.sync.read(fs.readFileSync(path));
  return { rgb: rgbOfRgba(png.data, png.width * png.height), width: png.width, height: png.height };
}

/** A segment explainer's target_mask: MASK.png's nonzero pixels (float32 [H, W]), or no rows
 * (the explainer's default mask) without one. */
function maskFeed(session, path) {
  const shape = session.inputMetadata?.find((m) => m.name === 'target_mask')?.shape;
  if (!path) return new ort.Tensor('float32', new Float32Array(0), [0, shape?.[1] ?? 0]);
  const png = PNG.sync.read(fs.readFileSync(path));
  if (shape && typeof shape[1] === 'number' && png.width !== shape[1]) {
    fail(`${path} is ${png.width} wide; the output's grid is ${shape[1]} wide`);
  }
  const mask = new Float32Array(png.width * png.height);
  for (let p = 0; p < mask.length; p++) {
    mask[p] = png.data[4 * p] || png.data[4 * p + 1] || png.data[4 * p + 2] ? 1 : 0;
  }
  return new ort.Tensor('float32', mask, [png.height, png.width]);
}

/** The mask a segment explainer used (its weights [C, H, W] summed over C), when its grid is
 * the image's; else null. */
function usedMask(weights, pixels) {
  if (!weights || weights.dims.length !== 3 || weights.dims[1] * weights.dims[2] !== pixels) return null;
  const mask = new Float64Array(pixels);
  weights.data.forEach((w, i) => { if (w !== 0) mask[i % pixels] = 1; });
  return mask;
}

/** The image, then the image under each map (alpha 0.5), side by side. */
function writeStrip(path, { rgb, width, height }, maps) {
  const panels = [null, ...maps];
  const png = new PNG({ width: width * panels.length, height });
  panels.forEach((map, k) => {
    const rgba = overlay(rgb, map, width * height);
    for (let y = 0; y < height; y++) {
      png.data.set(rgba.subarray(4 * y * width, 4 * (y + 1) * width), 4 * (y * png.width + k * width));
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
  const known = ['image', 'target_index', 'target_mask', 'baseline'];
  const other = session.inputNames.find((n) => !known.includes(n));
  if (other) fail(`${args.model} takes ${other}, which explain.mjs does not feed (it feeds ${known.join(', ')})`);
  if (session.inputNames.includes('target_mask')) feeds.target_mask = maskFeed(session, args.mask);
  else if (args.mask) fail(`${args.model} takes no mask (export a segmentation model with --target-kind segment)`);
  if (session.inputNames.includes('target_index')) { // -1: the top-1 class
    feeds.target_index = new ort.Tensor('int64', BigInt64Array.from([BigInt(args.target ?? -1)]), []);
  } else if (args.target !== undefined) {
    fail('this explainer was exported with --optional-inputs, whose target_index the JavaScript API cannot feed; re-export it without that option');
  }
  if (session.inputNames.includes('baseline')) { // no rows: the explainer's default baseline
    feeds.baseline = new ort.Tensor('uint8', new Uint8Array(0), [0, image.width, 3]);
  }
  const t0 = performance.now();
  const r = await session.run(feeds);
  const seconds = (performance.now() - t0) / 1000;
  const methods = session.outputNames.filter((n) => n.endsWith('_map')).map((n) => n.slice(0, -4));
  const mask = usedMask(r.weights, image.width * image.height);
  writeStrip(args.out, image, [...(mask ? [mask] : []), ...methods.map((m) => r[`${m}_map`].data)]);
  const target = Number(r.target.data[0]);
  const gap = r.rsi_completeness_gap ? `, RSI gap ${gapText(r.rsi_completeness_gap.data[0])}` : '';
  const what = r.weights  // a target of another kind: y = Σ W ⊙ S at x, and the mask's area
    ? `y ${Number(r.ym.data[0]).toPrecision(4)}, ${r.weights.data.filter((w) => w !== 0).length} weighted outputs`
    : `score ${r.scores.data[target].toPrecision(4)}`;
  const panels = ['image', ...(mask ? ['mask'] : []), ...methods];
  console.log(`class ${target}, ${what}${gap}, ${seconds.toFixed(3)} s -> ${args.out} (${panels.join(' | ')})`);
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
