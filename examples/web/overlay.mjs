// The overlay the examples draw, shared by the page (index.html) and the Node client
// (../node/explain.mjs): each pixel of the image under matplotlib's "jet" colour of the map
// at alpha 0.5, as ort_cam's panels draw it; and the completeness gap as both print it.

/** RSI's completeness gap as text: a percentage, or "n/a" where the explainer gives NaN (y at
 * x equals y at the baseline to float32, where ort-cam explain prints n/a too). */
export function gapText(gap) {
  return Number.isNaN(gap) ? 'n/a (y at x equals y at the baseline)' : `${(100 * gap).toPrecision(2)}%`;
}

/** matplotlib's "jet" colour map, as ort_cam's panels use, for v in [0, 1]. */
export function jet(v) {
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

/** RGB bytes (3 a pixel) of RGBA bytes (4 a pixel): alpha dropped, as PIL's convert("RGB"). */
export function rgbOfRgba(rgba, pixels) {
  const rgb = new Uint8Array(pixels * 3);
  for (let p = 0; p < pixels; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = rgba[4 * p + c];
  return rgb;
}

/**
 * RGBA bytes (opaque) of the image `rgb` (3 bytes a pixel, `pixels` pixels) under `map`
 * (one value a pixel, clipped to [0, 1]) at alpha 0.5; of the image alone when `map` is null.
 */
export function overlay(rgb, map, pixels) {
  const rgba = new Uint8ClampedArray(4 * pixels);
  for (let p = 0; p < pixels; p++) {
    const color = map ? jet(Math.min(Math.max(map[p], 0), 1)) : null;
    for (let c = 0; c < 3; c++) {
      const v = rgb[3 * p + c] / 255;
      rgba[4 * p + c] = Math.round(255 * (color ? 0.5 * v + 0.5 * color[c] : v));
    }
    rgba[4 * p + 3] = 255;
  }
  return rgba;
}
