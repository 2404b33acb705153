//! The working keys of every live generation of a key ring, built once per ring so sealing,
//! opening and tagging never re-derive a key.

use spike_core::crypto::{CipherKey, CryptoError, EnvelopeKey, KeyId, KeyRing, RecordMac};

/// One ring and the envelope and record-MAC keys of its live generations, current first.
pub(super) struct Generations {
    ring: KeyRing,
    envelopes: Vec<EnvelopeKey>,
    macs: Vec<RecordMac>,
}

impl Generations {
    pub(super) fn new(ring: KeyRing) -> Self {
        let live = || std::iter::once(ring.current()).chain(ring.older());
        Self {
            envelopes: live().map(EnvelopeKey::new).collect(),
            macs: live().map(RecordMac::new).collect(),
            ring,
        }
    }

    pub(super) fn ring(&self) -> &KeyRing {
        &self.ring
    }

    pub(super) fn current_envelope(&self) -> &EnvelopeKey {
        &self.envelopes[0]
    }

    pub(super) fn current_mac(&self) -> &RecordMac {
        &self.macs[0]
    }

    /// The envelope key of generation `id`; the current one when `id` is unknown (it then
    /// refuses the envelope with the key-mismatch error).
    pub(super) fn envelope_for(&self, id: Option<KeyId>) -> &EnvelopeKey {
        self.envelopes
            .iter()
            .find(|k| Some(k.key_id()) == id)
            .unwrap_or(self.current_envelope())
    }

    /// The record MAC of generation `id`, as [`Generations::envelope_for`].
    pub(super) fn mac_for(&self, id: Option<KeyId>) -> &RecordMac {
        self.macs
            .iter()
            .find(|k| Some(k.key_id()) == id)
            .unwrap_or(self.current_mac())
    }

    /// The cipher-API key of generation `id`, live or retired; the current one when unknown.
    pub(super) fn cipher_for(&self, id: Option<KeyId>) -> Result<CipherKey, CryptoError> {
        let live = std::iter::once(self.ring.current()).chain(self.ring.older());
        if let Some(k) = live.clone().find(|k| Some(k.key_id()) == id) {
            return CipherKey::new(&k.derive(spike_core::crypto::KeyPurpose::Cipher));
        }
        if let Some(sub) = self
            .ring
            .retired_cipher_keys()
            .iter()
            .find(|s| Some(s.data_key_id()) == id)
        {
            return CipherKey::new(sub);
        }
        CipherKey::new(
            &self
                .ring
                .current()
                .derive(spike_core::crypto::KeyPurpose::Cipher),
        )
    }
}
