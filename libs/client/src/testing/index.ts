export { fakeJob, startFakeInferencer, startFakeTrainer } from "./fake-services.js";
export type { FakeInferencerScript, FakeServer, FakeTrainerScript, ReceivedCall } from "./fake-services.js";
