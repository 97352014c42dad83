// The example against a real server: starts the Python ledger's demo (`consent-ledger demo --port 0`, a fresh
// ledger with the demo's story played), runs examples/check-access.ts as the hospital and as the insurer, and checks
// what it printed. Needs the repository's Python environment (.venv, or $CONSENT_LEDGER_PYTHON); without it the test
// is skipped, except under CI=true, where it fails.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { createInterface } from "node:readline";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const python = process.env.CONSENT_LEDGER_PYTHON ?? join(root, ".venv/bin/python");
const available = existsSync(python);
const skip = !available && process.env.CI !== "true" ? "no Python environment (.venv): run scripts/test first" : false;

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: fileURLToPath(new URL("..", import.meta.url)) });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("close", (code) => resolve({ code, out }));
  });
}

describe("examples/check-access.ts against the demo server", { skip, timeout: 300_000 }, () => {
  let demo: ChildProcess | undefined;
  let dir = "";
  let target = "";

  before(async () => {
    assert.ok(available, `no Python at ${python} (CI=true): run scripts/test or set CONSENT_LEDGER_PYTHON`);
    dir = mkdtempSync(join(tmpdir(), "consent-ledger-ts-"));
    demo = spawn(python, ["-m", "consent_ledger.cli", "demo", "--port", "0", "--dir", join(dir, "demo")], {
      cwd: root,
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines = createInterface({ input: demo.stdout! });
    let log = "";
    demo.stderr!.on("data", (d) => (log += d));
    target = await new Promise<string>((resolve, reject) => {
      let found = "";
      lines.on("line", (line) => {
        log += line + "\n";
        const m = /serving on (127\.0\.0\.1:\d+)/.exec(line);
        if (m && !found) found = m[1]!;
        if (line.includes("export CONSENT_LEDGER_SERVER=")) resolve(found);
      });
      demo!.on("exit", (code) => reject(new Error(`the demo exited (${code}) before serving:\n${log}`)));
    });
  });

  after(async () => {
    if (demo && demo.exitCode === null) {
      const exited = new Promise((r) => demo!.on("exit", r));
      demo.kill("SIGINT");
      const timer = setTimeout(() => demo!.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the hospital: PERMIT, everything it rests on verified", async () => {
    const { code, out } = await run(process.execPath, [
      "--import", "tsx", "examples/check-access.ts", "--dir", join(dir, "demo"), "--server", target,
      "--party", "hospital-1", "--purpose", "TREAT", "--data", "laboratory-results", "--witness-quorum", "2",
    ]);
    assert.equal(code, 0, out);
    assert.match(out, /^witnessed: checkpoint of size \d+ cosigned by 2 pinned witnesses \(witness-1 \d+ s ago, witness-2 \d+ s ago\), quorum 2/m);
    assert.match(out, /^decision: PERMIT/m);
    assert.match(out, /laboratory-results {2}PERMIT {2}CONSENT_PERMIT {2}consent [0-9a-f]{12}\.\.\./);
    assert.match(out, /verified: receipt signed by the log key/);
    assert.match(out, /verified: 3 evidence entries/);
    assert.match(out, /verified: map proof for org:hospital-1: key proven by its ECVRF proof .*\(1 consent\)/);
    assert.match(out, /verified: map proof for role:hospital: .*\(0 consents\)/);
    assert.match(out, /verified: map proof for any: .*\(0 consents\)/);
    assert.match(out, /registration in the evidence is its latest/);
  });

  it("the insurer (its consent revoked in the story): DENY for both items, provably complete", async () => {
    const { code, out } = await run(process.execPath, [
      "--import", "tsx", "examples/check-access.ts", "--dir", join(dir, "demo"), "--server", target,
      "--party", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results", "--data", "clinical-notes:MH",
    ]);
    assert.equal(code, 0, out);
    assert.match(out, /^decision: DENY/m);
    assert.match(out, /clinical-notes \[MH\] {2}DENY {2}NO_MATCHING_CONSENT/);
    assert.match(out, /verified: map proof for org:insurer-1: .*\(0 consents\)/);
  });

  it("a wrong pinned log key: not verified, exit 1", async () => {
    const { code, out } = await run(process.execPath, [
      "--import", "tsx", "examples/check-access.ts", "--dir", join(dir, "demo"), "--server", target,
      "--log-key-file", join(dir, "demo", "alice.key.pub"),
    ]);
    assert.equal(code, 1, out);
    assert.match(out, /NOT VERIFIED/);
  });
});
