import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT, firewallCli } from './netns.js';

const render = (...args: string[]) => firewallCli('render', ...args);

describe('firewall render: one name for the tool, the port that was given', () => {
  it('--tool is the name for every command; --format is the same option on render', () => {
    for (const t of ['nftables', 'iptables', 'kubernetes', 'docker']) {
      const a = render('--tool', t, '--proxy', '10.0.0.5:8080');
      expect(a.code, a.stderr).toBe(0);
      expect(render('--format', t, '--proxy', '10.0.0.5:8080').stdout).toBe(a.stdout);
    }
    const clash = render('--tool', 'nftables', '--format', 'iptables', '--proxy', '10.0.0.5:8080');
    expect(clash.code).toBe(2);
    expect(clash.stderr.trim().split('\n')).toHaveLength(1);
    expect(clash.stderr).toMatch(/--tool nftables and --format iptables disagree/);
  });

  it('kubernetes uses the port of --proxy (and of --dns-server), never a default it was not given', () => {
    const np = parse(render('--tool', 'kubernetes', '--proxy', '10.0.0.5:8080', '--dns-label', 'app=dns', '--dns-server', '10.0.0.53:5353').stdout);
    expect(np.spec.egress[0].ports).toEqual([{ protocol: 'TCP', port: 8080 }]);
    expect(np.spec.egress[1].ports).toEqual([{ protocol: 'UDP', port: 5353 }, { protocol: 'TCP', port: 5353 }]);
    expect(render('--tool', 'kubernetes', '--proxy-port', '9000', '--proxy', '10.0.0.5:8080').stdout).toMatch(/port: 9000[\s\S]*port: 8080/);
    expect(render('--tool', 'kubernetes', '--dns-port', '53', '--dns-server', '10.0.0.53:5353').code).toBe(2);
    expect(parse(render('--tool', 'kubernetes').stdout).spec.egress[0].ports).toEqual([{ protocol: 'TCP', port: 3128 }]);
  });
});

describe('firewall render: --agent-local-port', () => {
  it('renders ports and ranges for lo only, in both tools; a bad range is exit 2', () => {
    const nft = render('--tool', 'nftables', '--proxy', '127.0.0.1:3128', '--agent-local-port', '5173-5180', '--agent-local-port', '3000').stdout;
    expect(nft).toContain('oifname "lo" meta l4proto { tcp, udp } th dport { 3000, 5173-5180 } accept');
    expect(nft).not.toMatch(/oifname "lo" accept/);
    const ipt = render('--tool', 'iptables', '--family', '6', '--proxy', '127.0.0.1:3128', '--agent-local-port', '3000,5173-5180').stdout;
    expect(ipt).toContain('-A AGENT_EGRESS -o lo -p tcp -m multiport --dports 3000,5173:5180 -j RETURN');
    expect(ipt).toContain('-A AGENT_EGRESS -o lo -p udp -m multiport --dports 3000,5173:5180 -j RETURN');
    expect(ipt).not.toMatch(/-o lo -j RETURN/);
    // multiport takes 15 ports a rule, a range counting two: 8 ranges need two rules per protocol.
    const many = Array.from({ length: 8 }, (_, i) => `${1000 + i * 10}-${1005 + i * 10}`).join(',');
    expect(render('--tool', 'iptables', '--family', '4', '--proxy', '127.0.0.1:3128', '--agent-local-port', many).stdout.match(/-o lo -p tcp/g)).toHaveLength(2);
    for (const bad of ['5180-5173', '0', '70000', 'abc', '1-']) {
      const r = render('--tool', 'nftables', '--proxy', '127.0.0.1:3128', '--agent-local-port', bad);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/--agent-local-port/);
    }
  });
});

describe('firewall render --tool docker: what it prints can start the image', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'ae-render-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const out = render('--tool', 'docker', '--proxy-port', '8080', '--policy-file', '/srv/egress/policy.yaml').stdout;
  const compose = parse(out);
  const proxy = compose.services.egress;
  const dockerRun = out.split('\n').find((l) => l.includes('docker run -d --name egress'))!;

  it('the proxy service mounts the policy where the image reads it, passes the admin token and listens on the given port', () => {
    expect(proxy.volumes).toContainEqual({ type: 'bind', source: '/srv/egress/policy.yaml', target: '/etc/agent-egress/policy.yaml', read_only: true });
    expect(proxy.environment.AGENT_EGRESS_ADMIN_TOKEN).toMatch(/^\$\{AGENT_EGRESS_ADMIN_TOKEN:\?/);
    expect(proxy.command).toContain('--listen=0.0.0.0:8080');
    for (const k of ['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy']) expect(compose.services.agent.environment[k]).toBe('http://egress:8080');
    expect(dockerRun).toContain('-v /srv/egress/policy.yaml:/etc/agent-egress/policy.yaml:ro');
    expect(dockerRun).toContain('-e AGENT_EGRESS_ADMIN_TOKEN');
    expect(dockerRun).toContain(`agent-egress:latest ${proxy.command.join(' ')}`);
    expect(out).toMatch(/-e HTTPS_PROXY=http:\/\/egress:8080 /);
  });

  it("a relative --policy-file becomes an absolute bind source for docker run; a path with shell characters is refused", () => {
    expect(render('--tool', 'docker').stdout).toContain('-v "$PWD/policy.yaml":/etc/agent-egress/policy.yaml:ro');
    const bad = render('--tool', 'docker', '--policy-file', 'p;rm -rf x');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--policy-file/);
  });

  it('the image entrypoint with those arguments starts the proxy (paths and addresses mapped to this machine)', async () => {
    const entry = /^ENTRYPOINT (.*)$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
    // The image runs node with its own V8 flags (the sidecar's semi-space cap): start it with the same ones.
    const ep = JSON.parse(entry!) as string[];
    expect(ep.slice(0, 3)).toEqual(['dumb-init', '--', 'node']);
    expect(ep.at(-1)).toBe('/app/bin/agent-egress.js');
    const nodeFlags = ep.slice(3, -1);
    expect(nodeFlags.every((f) => f.startsWith('--'))).toBe(true);
    writeFileSync(join(tmp, 'policy.yaml'), readFileSync(join(ROOT, 'policies', 'default.yaml')));
    const args = (proxy.command as string[]).map((a) =>
      a
        .replace('/etc/agent-egress/policy.yaml', join(tmp, 'policy.yaml'))
        .replace('/var/lib/agent-egress', join(tmp, 'data'))
        // Port 0 on loopback here: the container's own ports are not ours to take.
        .replace(/0\.0\.0\.0:\d+/, '127.0.0.1:0'),
    );
    expect(args).toHaveLength(proxy.command.length);
    const child = spawn('node', [...nodeFlags, join(ROOT, 'bin', 'agent-egress.js'), ...args], {
      env: { ...process.env, ...Object.fromEntries(Object.keys(proxy.environment).map((k) => [k, 'render-test-token-0123456789abcdef'])) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    for (let i = 0; i < 120 && !log.includes('agent-egress proxy listening') && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 250));
    child.kill('SIGTERM');
    await exited;
    expect(log).toContain('agent-egress proxy listening');
  });
});
