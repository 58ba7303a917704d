import type { Command } from "./command.js";

/**
 * `poseloop stream`. Its work lives in stream-run.ts, loaded when the command runs: it pulls in image
 * codecs (sharp) and the synthetic renderer, which the other commands (and --help) should not pay for.
 */
export const streamCommand: Command = {
  name: "stream",
  summary: "Stream a video, a camera, an image folder or synthetic frames through the inferencer; print FPS and latency.",
  synopsis: "<video | URL | /dev/videoN | image-folder | --synthetic> [--out annotated.mp4|.gif] [options]",
  description: [
    "A video is decoded by ffmpeg (@ffmpeg-installer/ffmpeg, or POSELOOP_FFMPEG) into raw RGB frames; the",
    "images of a folder are sent encoded, in natural name order; --synthetic renders humanoid scenes.",
    "Frames go over one StreamKeypoints call with bounded read-ahead. A terminal shows live FPS and latency",
    "(p50/p95 from sending a frame to reading its result); --json prints one line per result. --out writes",
    "a video with skeletons, the serving model version burnt in, and a yellow border and banner on the frames",
    "where the serving version switches; with --track each person's box and #id label keep one colour. Each",
    "frame's skeleton is the one its model version's manifest declares (GetServingModel), a swap included.",
    "Live sources (rtsp://, rtmp://, srt://, udp:// URLs, a camera such as /dev/video0, an http(s):// URL",
    "without a duration) are read at their own pace, newest frame first (the server drops frames it cannot",
    "keep up with), until the sender stops or Ctrl-C. People come from the frame's boxes (--boxes), the",
    "inferencer's person detector (--detector) or the whole frame (--whole-frame); by default the detector",
    "when one serves, else the whole frame. --boxes reads JSON lines, one per frame, numbered from 1:",
    '  {"frame": 1, "boxes": [[x, y, w, h], [x, y, w, h, score]]}  (frame pixels; a frame without a line has none)',
    "The examples read what earlier ones wrote: out/synthetic.mp4, and the images in out/",
    "(`npm run sample-image` makes one, out/person.jpg).",
  ].join("\n"),
  examples: [
    "poseloop stream --synthetic --frames 120 --realtime --latest",
    "poseloop stream --synthetic --frames 60 --out out/synthetic.mp4",
    "poseloop stream out/synthetic.mp4 --out out/annotated.mp4",
    "poseloop stream out/ --fps 15 --out out/preview.gif",
    "poseloop stream out/synthetic.mp4 --track --smooth --out out/tracked.mp4",
    "poseloop stream rtsp://camera.local/stream1 --detector --track --smooth",
    "poseloop stream /dev/video0 --width 640 --whole-frame --max-persons 1 --smooth",
    "poseloop stream --synthetic --frames 10 --json | jq -c '.result.persons | length'",
  ],
  positionals: { min: 0, max: 1 },
  options: {
    synthetic: { type: "boolean", help: "render synthetic frames instead of reading a file" },
    frames: { type: "string", value: "N", help: "send at most N frames (synthetic default 60)" },
    fps: { type: "string", value: "X", help: "frame rate of images and synthetic frames (default 10); resamples a video" },
    width: { type: "string", value: "PX", help: "synthetic frame width (default 320); scales a video to this width" },
    height: { type: "string", value: "PX", help: "synthetic frame height (default 240)" },
    seed: { type: "string", value: "N", help: "synthetic scene seed (default 1)" },
    people: { type: "string", value: "N", help: "at most N people per synthetic frame (default 3)" },
    realtime: { type: "boolean", help: "send frames at their frame rate, like a live camera, instead of as fast as possible" },
    out: { type: "string", value: "FILE", help: "write an annotated video (.mp4, .mov, .mkv: H.264; .gif)" },
    model: { type: "string", value: "NAME", help: "model to serve from (default: the inferencer's)" },
    latest: { type: "boolean", help: "latest frame wins: the server drops waiting frames to keep latency low" },
    "max-in-flight": { type: "string", value: "N", help: "frames the server holds unanswered (default: the server's)" },
    "min-score": { type: "string", value: "X", help: "keypoints below this score are not drawn or counted (0-1)" },
    "max-persons": { type: "string", value: "N", help: "at most N people per frame" },
    detector: { type: "boolean", help: "find people with the inferencer's person detector (POSELOOP_DETECTOR_MODEL)" },
    "detector-model": { type: "string", value: "NAME", help: "the detector model to use (implies --detector)" },
    "score-threshold": { type: "string", value: "X", help: "detector: drop boxes scoring below X (0-1; default the detector's)" },
    "iou-threshold": { type: "string", value: "X", help: "detector: non-maximum suppression IoU (0-1; default the detector's)" },
    boxes: { type: "string", value: "FILE", help: "person boxes per frame from a JSON-lines file (see above)" },
    "whole-frame": { type: "boolean", help: "one person per frame: the whole frame" },
    smooth: { type: "boolean", help: "smooth keypoints over time (One-Euro filter, per track)" },
    "min-cutoff": { type: "string", value: "HZ", help: "smoothing: minimum cutoff frequency, lower is steadier at rest (default 1)" },
    beta: { type: "string", value: "X", help: "smoothing: speed coefficient, higher lags less on fast motion (default 0.007)" },
    track: { type: "boolean", help: "give people stable track ids" },
    "track-metric": { type: "string", value: "iou|oks", help: "match people across frames by box IoU (default) or keypoint OKS" },
    "scene-cut": { type: "string", value: "X", help: "restart tracks when consecutive frames' colours differ by more than X (0-1; default 0.5, 1 never)" },
    "flip-test": { type: "boolean", help: "average with the mirrored crop (slower, slightly more accurate)" },
    name: { type: "string", value: "TEXT", help: "stream name in the inferencer's logs and traces" },
  },
  async run(ctx) {
    const { runStream } = await import("./stream-run.js");
    return runStream(ctx);
  },
};
