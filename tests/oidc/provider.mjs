// A real OpenID Connect provider (panva/oidc-provider) for tests/test_sso.py, configured from one JSON argument:
//   node provider.mjs '{"port": 0, "clients": [...], "accounts": {"alice": {"email": ..., "email_verified": true}}}'
// Its built-in development interactions are the sign-in and consent pages: any login name is accepted with any
// password, and the account's claims come from "accounts". It prints "listening <issuer>" once it serves.
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2]);
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  scopes: ['openid', 'email', 'profile'],
  pkce: { required: () => true },
  cookies: { keys: ['polyrelay-test-oidc-cookie-key'] },
  async findAccount(ctx, sub) {
    const account = config.accounts[sub] ?? {};
    return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, ...account }) };
  },
});

const server = createServer(provider.callback());
server.listen(config.port, '127.0.0.1', () => process.stdout.write(`listening ${issuer}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
