import { describe, expect, it } from "vitest";
import { containerFor, parseDecodedStreamInfo, sourceKind, videoDecodeArgs, videoEncodeArgs } from "./ffmpeg-args.js";

// What ffmpeg 4.1 writes to stderr when decoding an H.264 MP4 to rawvideo on a pipe.
const DECODE_STDERR = `Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 't.mp4':
  Duration: 00:00:00.50, start: 0.000000, bitrate: 38 kb/s
    Stream #0:0(und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 1920x1080 [SAR 1:1 DAR 16:9], 24 kb/s, 29.97 fps, 29.97 tbr, 30k tbn, 59.94 tbc (default)
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> rawvideo (native))
Output #0, rawvideo, to 'pipe:1':
    Stream #0:0(und): Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x360 [SAR 1:1 DAR 16:9], q=2-31, 737 kb/s, 29.97 fps, 29.97 tbn, 29.97 tbc (default)
frame=    5 fps=0.0 q=-0.0 Lsize=      45kB time=00:00:00.50 bitrate= 737.3kbits/s speed= 251x`.split("\n");

describe("ffmpeg arguments", () => {
  it("decodes the first video stream to packed RGB24 on stdout, scaled, resampled and cut when asked", () => {
    expect(videoDecodeArgs({ input: "clip.mp4" })).toEqual([
      "-hide_banner", "-nostdin", "-nostats", "-i", "clip.mp4", "-map", "0:v:0", "-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]);
    const args = videoDecodeArgs({ input: "clip.mp4", width: 640, fps: 15, maxFrames: 100 });
    expect(args.slice(args.indexOf("-vf"), args.indexOf("-vf") + 2)).toEqual(["-vf", "fps=15,scale=640:-2"]);
    expect(args.slice(args.indexOf("-frames:v"), args.indexOf("-frames:v") + 2)).toEqual(["-frames:v", "100"]);
    expect(args.at(-1)).toBe("pipe:1");
  });

  it("encodes RGB24 from stdin into H.264 yuv420p with even sizes, or a GIF with its own palette", () => {
    const mp4 = videoEncodeArgs({ output: "out.mp4", width: 65, height: 49, fps: 25, container: "h264" });
    expect(mp4.join(" ")).toContain("-f rawvideo -pix_fmt rgb24 -s 65x49 -r 25 -i pipe:0");
    expect(mp4.join(" ")).toContain("-vf pad=ceil(iw/2)*2:ceil(ih/2)*2 -c:v libx264");
    expect(mp4.join(" ")).toContain("-pix_fmt yuv420p -movflags +faststart");
    expect(mp4.at(-1)).toBe("out.mp4");
    expect(mp4).toContain("-y");
    const gif = videoEncodeArgs({ output: "out.gif", width: 64, height: 48, fps: 10, container: "gif" }).join(" ");
    expect(gif).toContain("palettegen");
    expect(gif).toContain("-loop 0");
    expect(gif).not.toContain("libx264");
  });

  it("tells a file, a camera, a streaming URL and an http(s) URL apart", () => {
    expect(sourceKind("clip.mp4")).toBe("file");
    expect(sourceKind("/home/me/rtsp.mp4")).toBe("file");
    expect(sourceKind("/dev/video0")).toBe("device");
    expect(sourceKind("/dev/video12")).toBe("device");
    expect(sourceKind("rtsp://cam.local:554/stream1")).toBe("stream");
    expect(sourceKind("RTMP://live.example/app")).toBe("stream");
    expect(sourceKind("srt://10.0.0.2:9000")).toBe("stream");
    expect(sourceKind("https://example.org/clip.mp4")).toBe("http");
    expect(sourceKind("http://cam.local/mjpeg")).toBe("http");
    expect(sourceKind("ftp://example.org/clip.mp4")).toBeUndefined();
    expect(sourceKind("file:///etc/passwd")).toBeUndefined();
  });

  it("opens each kind of source the way it needs, the input options before -i", () => {
    const before = (spec: Parameters<typeof videoDecodeArgs>[0]) => {
      const args = videoDecodeArgs(spec);
      expect(args[args.indexOf("-i") + 1]).toBe(spec.input);
      return args.slice(args.indexOf("-nostats") + 1, args.indexOf("-i"));
    };
    expect(before({ input: "clip.mp4" })).toEqual([]);
    expect(before({ input: "clip.mp4", kind: "file" })).toEqual([]);
    expect(before({ input: "/dev/video0", kind: "device" })).toEqual(["-f", "v4l2", "-fflags", "nobuffer"]);
    expect(before({ input: "rtsp://cam/s", kind: "stream" })).toEqual(["-rtsp_transport", "tcp", "-fflags", "nobuffer", "-analyzeduration", "1000000"]);
    expect(before({ input: "srt://cam:9000", kind: "stream" })).toEqual(["-fflags", "nobuffer", "-analyzeduration", "1000000"]);
    expect(before({ input: "https://example.org/a.mp4", kind: "http" })).toEqual(["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"]);
    // Whatever the source, the output is the same raw RGB on stdout, scaled and resampled as asked.
    const live = videoDecodeArgs({ input: "/dev/video0", kind: "device", width: 320, fps: 10 });
    expect(live.slice(live.indexOf("-vf"))).toEqual(["-vf", "fps=10,scale=320:-2", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
  });

  it("picks the container from the output's extension", () => {
    expect(containerFor("a/b.MP4")).toBe("h264");
    expect(containerFor("x.mkv")).toBe("h264");
    expect(containerFor("x.gif")).toBe("gif");
    expect(containerFor("x.avi")).toBeUndefined();
    expect(containerFor("x")).toBeUndefined();
  });

  it("reads the decoded size and rate from the output stream, not the input's", () => {
    expect(parseDecodedStreamInfo(DECODE_STDERR)).toEqual({ width: 640, height: 360, fps: 29.97, durationSeconds: 0.5 });
    // Before the output header arrives there is nothing to tell.
    expect(parseDecodedStreamInfo(DECODE_STDERR.slice(0, 5))).toBeUndefined();
  });

  it("reads no duration from a live source", () => {
    const camera = [
      "Input #0, video4linux2,v4l2, from '/dev/video0':",
      "  Duration: N/A, start: 12345.678901, bitrate: 147456 kb/s",
      "    Stream #0:0: Video: rawvideo (YUY2 / 0x32595559), yuyv422, 640x480, 147456 kb/s, 30 fps, 30 tbr, 1000k tbn, 1000k tbc",
      "Output #0, rawvideo, to 'pipe:1':",
      "    Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x480, q=2-31, 221184 kb/s, 30 fps, 30 tbn, 30 tbc",
    ];
    expect(parseDecodedStreamInfo(camera)).toEqual({ width: 640, height: 480, fps: 30, durationSeconds: undefined });
  });
});
