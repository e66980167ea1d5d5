// The console's only way to the gateway's REST API: JSON in and out, the CSRF header on
// writes, errors from {"error": {"message"}}, and a 401 sends the user to the sign-in page.
import { t } from './i18n.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let signedOut = () => {};

/** Called whenever the API says the session is gone (401). */
export function whenSignedOut(handler) {
  signedOut = handler;
}

/** `path` with the non-empty values of `query` as its query string. */
export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== '' && value !== null && value !== undefined) params.set(name, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  // access.py refuses cookie-authenticated writes without it: a cross-site form cannot set it.
  if (method !== 'GET') headers['X-Requested-With'] = 'polyrelay-console';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', t('error.network'));
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error = new ApiError(
    response.status,
    data?.error?.code ?? 'http',
    data?.error?.message ?? t('error.http', { status: response.status }),
  );
  if (response.status === 401 && !path.startsWith('/api/auth/')) signedOut(); // a wrong password or code: no session lost
  throw error;
}

export const get = (path, query) => api('GET', withQuery(path, query));
export const post = (path, body = {}) => api('POST', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);
