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
        networks: [o.internalNetwork, o.outsideNetwork],
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
  };
  const commands = [
    `docker network create --internal ${o.internalNetwork}`,
    `docker network create ${o.outsideNetwork}`,
    `docker run -d --name ${o.proxyName} --network ${o.outsideNetwork} --read-only ${o.image}`,
    `docker network connect ${o.internalNetwork} ${o.proxyName}`,
    `docker run --rm -it --network ${o.internalNetwork} -e HTTPS_PROXY=${proxyUrl} -e HTTP_PROXY=${proxyUrl} -e NO_PROXY=localhost,127.0.0.1,${o.proxyName} YOUR_AGENT_IMAGE`,
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
