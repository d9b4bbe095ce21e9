import { stringify } from 'yaml';
import { FirewallOptionError } from './options.js';

export interface DockerOptions {
  /** Network with no route out, where agents live. */
  internalNetwork: string;
  /** Network the proxy uses to reach the outside. */
  outsideNetwork: string;
  /** Service / container name of the proxy, as agents address it. */
  proxyName: string;
  proxyPort: number;
  image: string;
  /** The policy file on the Docker host; the image reads it at /etc/agent-egress/policy.yaml. */
  policyFile: string;
}

/** Where the image (Dockerfile) expects its policy and its store. */
export const IMAGE_POLICY = '/etc/agent-egress/policy.yaml';
export const IMAGE_DATA_DIR = '/var/lib/agent-egress';
const ADMIN_PORT = 3129;
const DATA_VOLUME = 'agent-egress-decisions';
const HOST_PATH = /^[A-Za-z0-9._/-]{1,4096}$/;

/** A host path that lands unquoted in a shell command and a compose file, so only plain characters. */
export function checkHostPath(kind: string, s: string): string {
  if (!HOST_PATH.test(s)) throw new FirewallOptionError(`${kind} ${JSON.stringify(s)}: use a path of letters, digits and . _ / -`);
  return s;
}

/** The arguments after the image name: the image's entrypoint runs `agent-egress` with them. */
export function dockerServeArgs(o: DockerOptions): string[] {
  return ['serve', `--listen=0.0.0.0:${o.proxyPort}`, `--admin-listen=0.0.0.0:${ADMIN_PORT}`, `--policy=${IMAGE_POLICY}`, `--data-dir=${IMAGE_DATA_DIR}`];
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

export function checkDockerName(kind: string, s: string): string {
  if (!NAME.test(s)) throw new FirewallOptionError(`${kind} ${JSON.stringify(s)} is not a valid Docker name`);
  return s;
}

/** The gateway pattern for Docker: compose snippet plus the equivalent plain `docker` commands. */
export function renderDocker(o: DockerOptions): string {
  const proxyUrl = `http://${o.proxyName}:${o.proxyPort}`;
  const compose = {
    services: {
      [o.proxyName]: {
        image: o.image,
        command: dockerServeArgs(o),
        // The admin API listens on the container's networks, so it demands a token (docs/deploy.md).
        environment: { AGENT_EGRESS_ADMIN_TOKEN: '${AGENT_EGRESS_ADMIN_TOKEN:?set AGENT_EGRESS_ADMIN_TOKEN}' },
        networks: [o.internalNetwork, o.outsideNetwork],
        volumes: [
          { type: 'bind', source: o.policyFile, target: IMAGE_POLICY, read_only: true },
          { type: 'volume', source: DATA_VOLUME, target: IMAGE_DATA_DIR },
        ],
        read_only: true,
        tmpfs: ['/tmp'],
        cap_drop: ['ALL'],
        security_opt: ['no-new-privileges:true'],
      },
      agent: {
        networks: [o.internalNetwork],
        environment: {
          HTTPS_PROXY: proxyUrl,
          HTTP_PROXY: proxyUrl,
          https_proxy: proxyUrl,
          http_proxy: proxyUrl,
          NO_PROXY: `localhost,127.0.0.1,::1,${o.proxyName}`,
          no_proxy: `localhost,127.0.0.1,::1,${o.proxyName}`,
        },
      },
    },
    networks: {
      // internal: Docker gives this network no gateway, so agents have no route out except the proxy.
      [o.internalNetwork]: { internal: true },
      [o.outsideNetwork]: {},
    },
    volumes: { [DATA_VOLUME]: {} },
  };
  // docker run wants an absolute bind source.
  const policySource = o.policyFile.startsWith('/') ? o.policyFile : `"$PWD/${o.policyFile.replace(/^\.\//, '')}"`;
  const commands = [
    `docker network create --internal ${o.internalNetwork}`,
    `docker network create ${o.outsideNetwork}`,
    'export AGENT_EGRESS_ADMIN_TOKEN=$(openssl rand -hex 24)',
    `docker run -d --name ${o.proxyName} --network ${o.outsideNetwork} --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges ` +
      `-e AGENT_EGRESS_ADMIN_TOKEN -v ${policySource}:${IMAGE_POLICY}:ro -v ${DATA_VOLUME}:${IMAGE_DATA_DIR} ${o.image} ${dockerServeArgs(o).join(' ')}`,
    `docker network connect ${o.internalNetwork} ${o.proxyName}`,
    `docker run --rm -it --network ${o.internalNetwork} -e HTTPS_PROXY=${proxyUrl} -e HTTP_PROXY=${proxyUrl} -e NO_PROXY=localhost,127.0.0.1,::1,${o.proxyName} YOUR_AGENT_IMAGE`,
  ];
  return [
    '# agent-egress gateway pattern: merge into your docker-compose.yml',
    stringify(compose).trimEnd(),
    '',
    '# or with plain docker:',
    ...commands.map((c) => `#   ${c}`),
    '',
  ].join('\n');
}
