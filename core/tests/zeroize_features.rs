//! The hash and MAC states that hold key material wipe themselves on drop, because the
//! workspace enables the `zeroize` features of `sha2` and `hmac`. An HMAC state is two SHA-256
//! cores (the keyed inner and outer states) plus a block buffer, and HKDF's state is an HMAC
//! state; the cores are checked here (the buffer's wipe comes with the same feature). Without
//! the features these bounds do not hold and this file does not compile.

use hmac::EagerHash;
use sha2::{Sha256, Sha512};
use zeroize::ZeroizeOnDrop;

fn wipes_on_drop<T: ZeroizeOnDrop>() {}

#[test]
fn key_holding_hash_and_mac_states_wipe_on_drop() {
    wipes_on_drop::<Sha256>();
    wipes_on_drop::<Sha512>();
    // What `Hmac<Sha256>` (and so `Hkdf<Sha256>`) keeps its keyed states in.
    wipes_on_drop::<<Sha256 as EagerHash>::Core>();
}
