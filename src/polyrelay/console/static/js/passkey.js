// WebAuthn in the browser: the server's options (JSON, base64url) in, the credential as JSON out.
// The browser's own JSON codecs (parse*OptionsFromJSON, toJSON) do the base64url work.

export const passkeysSupported = () =>
  typeof PublicKeyCredential !== 'undefined' && 'parseCreationOptionsFromJSON' in PublicKeyCredential;

/** Make a passkey from registration options; resolves with the credential to send back. */
export async function createPasskey(options) {
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  return (await navigator.credentials.create({ publicKey })).toJSON();
}

/** Sign a sign-in challenge with a passkey; resolves with the answer to send back. */
export async function usePasskey(options) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  return (await navigator.credentials.get({ publicKey })).toJSON();
}
