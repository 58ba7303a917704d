import type { EnvReader } from "@poseloop/core";
import type { BusOptions } from "./open-bus.js";
import type { NatsSecurityOptions } from "./nats/connection.js";
import { redactNatsUrl } from "./nats/url-secrets.js";

/** The bus settings of a service, with how it proves itself to NATS (see NatsSecurityOptions). */
export type BusSettings = Omit<BusOptions, "logger"> & { readonly natsSecurity: NatsSecurityOptions };

/**
 * The bus settings every service reads: POSELOOP_NATS_URL (comma-separated nats:// URLs; unset: the embedded
 * bus), POSELOOP_BUS_DIR (the embedded bus's directory, shared by the services of one machine), and NATS
 * credentials and TLS from files: POSELOOP_NATS_CREDS, POSELOOP_NATS_NKEY_SEED_FILE, POSELOOP_NATS_USER with
 * POSELOOP_NATS_PASSWORD_FILE, POSELOOP_NATS_TOKEN_FILE, POSELOOP_NATS_TLS_CA, POSELOOP_NATS_TLS_CERT and
 * POSELOOP_NATS_TLS_KEY.
 */
export function busOptionsFromEnv(env: EnvReader, name: string): BusSettings {
  const servers = env.list("POSELOOP_NATS_URL", { default: [] });
  for (const server of servers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s/]+(:\d+)?\/?$/.test(server) && !/^[^\s:/]+:\d+$/.test(server)) {
      env.problem(`POSELOOP_NATS_URL entry ${JSON.stringify(redactNatsUrl(server))} is not a NATS URL (nats://host:4222)`);
    }
  }
  const natsSecurity = natsSecurityFromEnv(env, servers.length > 0);
  return { natsServers: servers, embeddedDir: env.string("POSELOOP_BUS_DIR", { default: ".poseloop/bus" }), name, natsSecurity };
}

function natsSecurityFromEnv(env: EnvReader, nats: boolean): NatsSecurityOptions {
  const value = (variable: string): string | undefined => {
    const text = env.string(variable, { default: "" });
    return text === "" ? undefined : text;
  };
  const credsFile = value("POSELOOP_NATS_CREDS");
  const nkeySeedFile = value("POSELOOP_NATS_NKEY_SEED_FILE");
  const user = value("POSELOOP_NATS_USER");
  const passwordFile = value("POSELOOP_NATS_PASSWORD_FILE");
  const tokenFile = value("POSELOOP_NATS_TOKEN_FILE");
  const tlsCaFile = value("POSELOOP_NATS_TLS_CA");
  const tlsCertFile = value("POSELOOP_NATS_TLS_CERT");
  const tlsKeyFile = value("POSELOOP_NATS_TLS_KEY");
  const security: NatsSecurityOptions = {
    ...(credsFile === undefined ? {} : { credsFile }),
    ...(nkeySeedFile === undefined ? {} : { nkeySeedFile }),
    ...(user === undefined ? {} : { user }),
    ...(passwordFile === undefined ? {} : { passwordFile }),
    ...(tokenFile === undefined ? {} : { tokenFile }),
    ...(tlsCaFile === undefined ? {} : { tlsCaFile }),
    ...(tlsCertFile === undefined ? {} : { tlsCertFile }),
    ...(tlsKeyFile === undefined ? {} : { tlsKeyFile }),
  };
  if (credsFile !== undefined && nkeySeedFile !== undefined) env.problem("POSELOOP_NATS_CREDS and POSELOOP_NATS_NKEY_SEED_FILE are two ways to sign in: set one");
  if ((user === undefined) !== (passwordFile === undefined)) env.problem("POSELOOP_NATS_USER and POSELOOP_NATS_PASSWORD_FILE go together: set both or neither");
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) env.problem("POSELOOP_NATS_TLS_CERT and POSELOOP_NATS_TLS_KEY go together: set both or neither");
  if (!nats && Object.keys(security).length > 0) env.problem("the POSELOOP_NATS_* credentials and TLS settings need POSELOOP_NATS_URL (the embedded bus has no server to sign in to)");
  return security;
}
