import { AttributeProto_AttributeType, type NodeProto } from "@poseloop/proto/onnx/onnx_pb";
import { fromTensorProto, type HostTensor } from "./tensor.js";

/** An INT attribute as a number, or `fallback` when absent. */
export function intAttr(node: NodeProto, name: string, fallback: number): number {
  const attr = node.attribute.find((a) => a.name === name);
  return attr?.type === AttributeProto_AttributeType.INT ? Number(attr.i) : fallback;
}

export function floatAttr(node: NodeProto, name: string, fallback: number): number {
  const attr = node.attribute.find((a) => a.name === name);
  return attr?.type === AttributeProto_AttributeType.FLOAT ? attr.f : fallback;
}

export function intsAttr(node: NodeProto, name: string): number[] | undefined {
  const attr = node.attribute.find((a) => a.name === name);
  return attr?.type === AttributeProto_AttributeType.INTS ? attr.ints.map(Number) : undefined;
}

export function stringAttr(node: NodeProto, name: string, fallback: string): string {
  const attr = node.attribute.find((a) => a.name === name);
  return attr?.type === AttributeProto_AttributeType.STRING ? new TextDecoder().decode(attr.s) : fallback;
}

export function tensorAttr(node: NodeProto, name: string): HostTensor | undefined {
  const attr = node.attribute.find((a) => a.name === name);
  return attr?.type === AttributeProto_AttributeType.TENSOR && attr.t !== undefined ? fromTensorProto(attr.t) : undefined;
}
