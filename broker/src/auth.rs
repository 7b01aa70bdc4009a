//! The authentication seam. The broker asks an [`Authenticator`] about every
//! CONNECT (and 5.0 enhanced AUTH exchange); later work plugs in password
//! files, ACLs and webhooks behind the same trait.
