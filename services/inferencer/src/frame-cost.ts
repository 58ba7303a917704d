import type { FrameImage } from "@poseloop/estimator";

/**
 * The pixels a worker will decode for a frame, the measure of its decode cost, read without decoding: raw
 * frames state their size, encoded ones announce it in their header (PNG IHDR, JPEG SOF, WebP VP8/VP8L/VP8X).
 * A header we cannot read counts as a pixel per byte of data: compressed images hold more, so this errs low,
 * and the worker refuses frames above the pixel limit anyway.
 */
export function decodePixels(image: FrameImage): number {
  if (image.kind === "raw") return image.width * image.height;
  const size = pngSize(image.data) ?? jpegSize(image.data) ?? webpSize(image.data);
  return size === undefined ? image.data.byteLength : size.width * size.height;
}

interface Size {
  readonly width: number;
  readonly height: number;
}

function pngSize(d: Uint8Array): Size | undefined {
  if (d.length < 24 || d[0] !== 0x89 || d[1] !== 0x50 || d[2] !== 0x4e || d[3] !== 0x47) return undefined;
  const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

function jpegSize(d: Uint8Array): Size | undefined {
  if (d.length < 4 || d[0] !== 0xff || d[1] !== 0xd8) return undefined;
  let at = 2;
  // Walks the marker segments up to the first start-of-frame; each step skips a whole segment, so a frame
  // costs a few dozen reads however large it is.
  while (at + 9 < d.length) {
    if (d[at] !== 0xff) return undefined;
    const marker = d[at + 1] as number;
    if (marker === 0xff) {
      at++;
      continue;
    }
    const length = ((d[at + 2] as number) << 8) | (d[at + 3] as number);
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) return { height: ((d[at + 5] as number) << 8) | (d[at + 6] as number), width: ((d[at + 7] as number) << 8) | (d[at + 8] as number) };
    if (length < 2) return undefined;
    at += 2 + length;
  }
  return undefined;
}

function webpSize(d: Uint8Array): Size | undefined {
  const ascii = (offset: number, text: string): boolean => [...text].every((c, i) => d[offset + i] === c.charCodeAt(0));
  if (d.length < 30 || !ascii(0, "RIFF") || !ascii(8, "WEBP")) return undefined;
  const byte = (i: number): number => d[i] as number;
  if (ascii(12, "VP8X")) return { width: 1 + (byte(24) | (byte(25) << 8) | (byte(26) << 16)), height: 1 + (byte(27) | (byte(28) << 8) | (byte(29) << 16)) };
  if (ascii(12, "VP8L")) {
    const bits = byte(21) | (byte(22) << 8) | (byte(23) << 16) | (byte(24) << 24);
    return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >>> 14) & 0x3fff) };
  }
  if (ascii(12, "VP8 ")) return { width: (byte(26) | (byte(27) << 8)) & 0x3fff, height: (byte(28) | (byte(29) << 8)) & 0x3fff };
  return undefined;
}
