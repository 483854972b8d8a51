// The peer benches/refresh.rs measures the broker against: node oidc-provider 9 with RS256 JWT
// access tokens, one client, the default memory adapter, refresh tokens not rotated.
//
// Usage: node peer.mjs <refresh tokens to mint>. Listens on 127.0.0.1 (a free port), mints
// that many refresh tokens (scope "openid email profile offline_access", one grant each, as
// an authorization_code grant would have left them), then prints one JSON line
// {"port", "client_id", "client_secret", "refresh_tokens"} and serves until killed.

import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const count = Number(process.argv[2] ?? '64');
const CLIENT_ID = 'bench';
const CLIENT_SECRET = 'bench-peer-secret';
const RESOURCE = 'urn:identity-broker:bench';
const SCOPE = 'openid email profile offline_access';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' };

// Claims sized as the broker's: the same user facts in the ID token.
const findAccount = async (_ctx, sub) => ({
  accountId: sub,
  claims: async () => ({
    sub,
    email: `${sub}@contoso.com`,
    email_verified: true,
    preferred_username: `${sub}@contoso.com`,
    name: 'Bob Jones',
    given_name: 'Bob',
    family_name: 'Jones',
  }),
});

const provider = new Provider('http://127.0.0.1/realms/bench', {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    redirect_uris: ['https://app.bench/callback'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [signingKey] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'given_name', 'family_name'],
  },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  findAccount,
  rotateRefreshToken: false,
  ttl: { Grant: 14 * 86400, RefreshToken: 14 * 86400 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // JWT access tokens signed RS256, for refresh and client_credentials grants alike.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: RESOURCE,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

const client = await provider.Client.find(CLIENT_ID);
const refreshTokens = [];
for (let i = 0; i < count; i += 1) {
  const accountId = `refresh-${i}`;
  const grant = new provider.Grant({ accountId, clientId: CLIENT_ID });
  grant.addOIDCScope(SCOPE);
  grant.addResourceScope(RESOURCE, 'api');
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    accountId,
    client,
    grantId,
    gty: 'authorization_code',
    scope: SCOPE,
    resource: RESOURCE,
    authTime: Math.floor(Date.now() / 1000),
    expiresWithSession: false,
  });
  refreshTokens.push(await token.save());
}

const server = provider.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({
    port, client_id: CLIENT_ID, client_secret: CLIENT_SECRET, refresh_tokens: refreshTokens,
  })}\n`);
});
