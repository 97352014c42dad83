// LedgerClient: the verifying client over gRPC (Connect's gRPC protocol on HTTP/2, which the grpcio server speaks).
// It pins the log's verifier key, remembers the last verified checkpoint (in memory) and checks that every new one
// is consistent with it, and verifies every answer it returns (clients/consent_ledger_client/client.py and
// consent.py are the reference; docs: clients/typescript/README.md).
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";
import { newAccessVerifier, verifyAccessResponse, type AccessVerifier, type VerifiedAccess } from "./access.ts";
import { equal } from "./bytes.ts";
import { openCheckpoint, type Checkpoint } from "./checkpoint.ts";
import { verifyEntry, type VerifiedEntry } from "./entry.ts";
import { InconsistentCheckpoints, InvalidInput, VerificationError } from "./errors.ts";
import { AccessService, CheckAccessRequestSchema, type CheckAccessRequest } from "./gen/consent_ledger/v1/access_pb.ts";
import { LogService } from "./gen/consent_ledger/v1/log_pb.ts";
import type { DecisionPolicy } from "./gen/consent_ledger/v1/access_pb.ts";
import { verifyConsistency } from "./merkle.ts";
import { parseVerifierKey, type Verifier } from "./note.ts";
import { ACCESS_EVENT, parsePayload } from "./payloads.ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { verifyWitnessedExtension, type WitnessedCheckpoint, type WitnessPolicy } from "./witness.ts";

export const PARTY_HEADER = "x-consent-ledger-party";

export interface LedgerClientOptions {
  /** "http://127.0.0.1:50051" (plaintext development server) or "https://host:port" (TLS). */
  baseUrl: string;
  /** The log's verifier key, "<name>+<8 hex>+<base64(0x01 || key)>" (the text of log.key.pub). */
  logKey: string;
  /** The map VRF public key (32 bytes, or the text of map-vrf.key.pub); unset: learned from the first StateCommit. */
  mapVrfKey?: Uint8Array | string;
  /** The organisation this client acts for. On a plaintext development server it is sent as the party header;
   * with TLS the server takes it from the client certificate. Decisions for anyone else are refused. */
  partyId?: string;
  /** TLS settings (ca, cert, key) for https base URLs. */
  tls?: SecureClientSessionOptions;
  /** Keys trusted to register parties, besides the log key. */
  operatorKeys?: Uint8Array[];
  /** Refuse decisions made under another policy. */
  policy?: DecisionPolicy;
  clockMs?: () => number;
  maxStateAgeMs?: number;
  maxClockSkewMs?: number;
  /** Accept answers only on checkpoints a quorum of pinned witnesses cosigned recently (see WitnessPolicy). */
  witnessPolicy?: WitnessPolicy;
  /** Use this transport instead of making one (tests). */
  transport?: Transport;
}

export interface AccessQuery {
  action: string;
  purpose: string;
  data: { dataClass: string; sensitivityLabels?: string[] }[];
  dataPeriod?: { startMs: bigint; endMs: bigint };
  timeMs?: bigint;
  breakGlass?: boolean;
  breakGlassReason?: string;
  record?: boolean;
}

function keyBytes(k: Uint8Array | string): Uint8Array {
  return typeof k === "string" ? parseVerifierKey(k.trim()).publicKey : k;
}

export class LedgerClient {
  readonly verifier: Verifier;
  readonly access: AccessVerifier;
  private readonly log: Client<typeof LogService>;
  private readonly accessService: Client<typeof AccessService>;
  private last: { checkpoint: Checkpoint; note: Uint8Array } | null = null;
  readonly witnessPolicy: WitnessPolicy | null;
  private witnessed: WitnessedCheckpoint | null = null;

  constructor(opts: LedgerClientOptions) {
    this.verifier = parseVerifierKey(opts.logKey.trim());
    this.witnessPolicy = opts.witnessPolicy ?? null;
    const partyId = opts.partyId ?? "";
    const interceptors: Interceptor[] = [];
    if (partyId && opts.baseUrl.startsWith("http://")) {
      interceptors.push((next) => async (req) => {
        req.header.set(PARTY_HEADER, partyId);
        return next(req);
      });
    }
    const transport =
      opts.transport ??
      createGrpcTransport({ baseUrl: opts.baseUrl, interceptors, ...(opts.tls ? { nodeOptions: opts.tls } : {}) });
    this.log = createClient(LogService, transport);
    this.accessService = createClient(AccessService, transport);
    this.access = newAccessVerifier({
      logPublicKey: this.verifier.publicKey,
      operatorKeys: opts.operatorKeys ?? [],
      mapVrfPublicKey: opts.mapVrfKey === undefined ? null : keyBytes(opts.mapVrfKey),
      partyId,
      policy: opts.policy ?? null,
      ...(opts.clockMs ? { clockMs: opts.clockMs } : {}),
      ...(opts.maxStateAgeMs !== undefined ? { maxStateAgeMs: opts.maxStateAgeMs } : {}),
      ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
    });
  }

  /** The last checkpoint this client verified, with its signed note. */
  get lastCheckpoint(): { checkpoint: Checkpoint; note: Uint8Array } | null {
    return this.last;
  }

  /**
   * Verify a signed checkpoint (log key, canonical body) and its consistency with the last one seen (a consistency
   * proof fetched from the log); remember it if newer. Throws InconsistentCheckpoints for a split view.
   */
  async acceptCheckpoint(note: Uint8Array): Promise<Checkpoint> {
    const last = this.last;
    if (last !== null && equal(note, last.note)) return last.checkpoint;
    let cp: Checkpoint;
    try {
      cp = openCheckpoint(note, this.verifier).checkpoint;
    } catch (e) {
      if (e instanceof InvalidInput) throw new VerificationError(`malformed checkpoint: ${e.message}`);
      throw e;
    }
    if (last === null) {
      this.last = { checkpoint: cp, note };
      return cp;
    }
    if (cp.size === last.checkpoint.size) {
      if (!equal(cp.rootHash, last.checkpoint.rootHash)) {
        throw new InconsistentCheckpoints(`two different roots for tree size ${cp.size}`, last.note, note, []);
      }
      return cp;
    }
    const [small, smallNote, large, largeNote] =
      cp.size > last.checkpoint.size ? [last.checkpoint, last.note, cp, note] : [cp, note, last.checkpoint, last.note];
    const proof = (await this.log.getConsistencyProof({ first: small.size, second: large.size })).hashes;
    try {
      verifyConsistency(small.size, large.size, small.rootHash, large.rootHash, proof);
    } catch {
      throw new InconsistentCheckpoints(
        `checkpoint of size ${large.size} does not extend the one of size ${small.size}`,
        smallNote,
        largeNote,
        proof,
      );
    }
    if (cp.size > last.checkpoint.size) this.last = { checkpoint: cp, note };
    return cp;
  }

  /** The log's latest checkpoint, verified (with a witness policy: on the witnessed checkpoint served with it). */
  async checkpoint(): Promise<Checkpoint> {
    const resp = await this.log.getCheckpoint({});
    const note = resp.checkpoint?.note ?? new Uint8Array(0);
    if (this.witnessPolicy === null) return this.acceptCheckpoint(note);
    return (await this.acceptWitnessed(note, resp.witnessedCheckpoint?.note ?? new Uint8Array(0), resp.witnessedConsistency)).checkpoint;
  }

  /** The newest witnessed checkpoint this client accepted (with a witness policy), or null. */
  get lastWitnessed(): WitnessedCheckpoint | null {
    return this.witnessed;
  }

  /**
   * Accept `note` under the witness policy (LedgerClient.accept_witnessed of the Python client): the witnessed
   * checkpoint `witnessedNote` (empty: `note` itself must carry the cosignatures) verifies under the policy, `proof`
   * proves `note` extends it, and both are consistent with what this client saw before.
   */
  async acceptWitnessed(
    note: Uint8Array,
    witnessedNote: Uint8Array,
    proof: readonly Uint8Array[],
  ): Promise<{ checkpoint: Checkpoint; witnessed: WitnessedCheckpoint }> {
    const policy = this.witnessPolicy;
    if (policy === null) throw new InvalidInput("acceptWitnessed needs a witness policy");
    let wc: WitnessedCheckpoint;
    let cp: Checkpoint;
    try {
      wc = policy.verify(witnessedNote.length ? witnessedNote : note, this.verifier, Math.floor(this.access.clockMs() / 1000));
      cp = openCheckpoint(note, this.verifier).checkpoint;
    } catch (e) {
      if (e instanceof InvalidInput) throw new VerificationError(`malformed checkpoint: ${e.message}`);
      throw e;
    }
    if (witnessedNote.length) {
      if (cp.size < wc.checkpoint.size) {
        throw new VerificationError(`the checkpoint (size ${cp.size}) is older than the witnessed checkpoint (size ${wc.checkpoint.size})`);
      }
      try {
        verifyWitnessedExtension(wc.checkpoint, cp, proof);
      } catch {
        throw new InconsistentCheckpoints("the checkpoint does not extend the witnessed checkpoint", witnessedNote, note, proof);
      }
    } else if (proof.length) {
      throw new VerificationError("a consistency proof came without a witnessed checkpoint");
    }
    await this.acceptCheckpoint(wc.note);
    await this.acceptCheckpoint(note);
    this.witnessed = wc;
    return { checkpoint: cp, witnessed: wc };
  }

  /** One entry, proven in the latest checkpoint (its body, if not erased, hashing to the leaf's commitment). */
  async getEntry(index: bigint): Promise<VerifiedEntry> {
    const resp = await this.log.getEntry({ index });
    const cp = await this.acceptCheckpoint(resp.checkpoint?.note ?? new Uint8Array(0));
    const e = resp.entry;
    if (e === undefined || e.index !== index) throw new VerificationError(`asked for entry ${index}, got another`);
    return verifyEntry(e.index, e.leaf, e.bodyErased ? null : e.envelope, resp.inclusionProof, cp);
  }

  /** Ask whether this organisation may act on a patient's data; every part of the answer verified. */
  async checkAccess(patient: Uint8Array, q: AccessQuery): Promise<VerifiedAccess> {
    const req = create(CheckAccessRequestSchema, {
      patient,
      action: q.action,
      purpose: q.purpose,
      data: q.data.map((d) => ({ dataClass: d.dataClass, sensitivityLabels: d.sensitivityLabels ?? [] })),
      ...(q.dataPeriod ? { dataPeriod: q.dataPeriod } : {}),
      timeMs: q.timeMs ?? 0n,
      breakGlass: q.breakGlass ?? false,
      breakGlassReason: q.breakGlassReason ?? "",
      recordAccessEvent: q.record ?? false,
    });
    const resp = await this.accessService.checkAccess(req);
    return this.verifyAccess(req, resp);
  }

  /** Verify a CheckAccess answer (also usable on a stored response). */
  async verifyAccess(
    req: CheckAccessRequest,
    resp: Awaited<ReturnType<Client<typeof AccessService>["checkAccess"]>>,
  ): Promise<VerifiedAccess> {
    const note = resp.checkpoint?.note ?? new Uint8Array(0);
    const cp =
      this.witnessPolicy === null
        ? await this.acceptCheckpoint(note)
        : (await this.acceptWitnessed(note, resp.witnessedCheckpoint?.note ?? new Uint8Array(0), resp.witnessedConsistency)).checkpoint;
    const verified = verifyAccessResponse(this.access, req, resp, cp);
    if (verified.accessEventIndex !== null) await this.checkRecordedEvent(verified);
    return verified;
  }

  /** The access event the ledger says it recorded is in the log, signed by the log key, citing this receipt. */
  private async checkRecordedEvent(v: VerifiedAccess): Promise<void> {
    const index = v.accessEventIndex!;
    const e = await this.getEntry(index);
    if (e.envelope === null || e.leaf.payloadType !== ACCESS_EVENT) {
      throw new VerificationError(`entry ${index} is not the access event for this decision`);
    }
    const p = parsePayload(e.envelope.payloadType, e.envelope.payload);
    if (p.type !== ACCESS_EVENT || !equal(p.message.receiptSha256, sha256(v.receipt))) {
      throw new VerificationError(`entry ${index} is not the access event for this decision`);
    }
    if (!e.envelope.signers.some((k) => equal(k, this.verifier.publicKey)) || p.message.decision !== v.decision.decision) {
      throw new VerificationError(`the access event at ${index} does not record this decision`);
    }
  }
}
