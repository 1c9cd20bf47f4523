import Foundation
import NIOSSL

/// A test certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost` (P-256, valid 2000-2100), made once with `openssl ca`. Only tests use them; the
/// authority's private key was not kept.
enum TLSFixture {
    static let authorityPEM = """
-----BEGIN CERTIFICATE-----
MIIBbjCCARWgAwIBAgIBATAKBggqhkjOPQQDAjAeMRwwGgYDVQQDDBNMbGFtYUNs
aWVudCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAe
MRwwGgYDVQQDDBNMbGFtYUNsaWVudCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZI
zj0DAQcDQgAEIt7uRH0UiEslF4xNnXnNjN3yK1yyvlvQrt6zH4KNfZTy56pjvnwc
qvG0env9I3EaGHfFW8RJFZKvu5pWtzYNrqNCMEAwDwYDVR0TAQH/BAUwAwEB/zAO
BgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFN5L/i8n+7KI+VqC1ScNWaLXVAFjMAoG
CCqGSM49BAMCA0cAMEQCIEY8aBlQrK1ALh/TpLBts3iGOHHD4uR+CY4x9iUU80lN
AiAYuEMDeoCIhKnFzydhTMjxRq05Fr8Ba184dX7eiXnFPw==
-----END CERTIFICATE-----
"""

    static let serverCertificatePEM = """
-----BEGIN CERTIFICATE-----
MIIBtDCCAVmgAwIBAgIBAjAKBggqhkjOPQQDAjAeMRwwGgYDVQQDDBNMbGFtYUNs
aWVudCB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAU
MRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARr
lxZFq+BQBg60I6cUf6SJiLSnCiMbE+oItZ2mOUIjEBcQzUNwpv14mEpaO6m84S7k
NlUhk8UqL8Gej5Aylt16o4GPMIGMMAkGA1UdEwQCMAAwDgYDVR0PAQH/BAQDAgeA
MBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQTMBGHBH8AAAGCCWxvY2FsaG9z
dDAfBgNVHSMEGDAWgBTeS/4vJ/uyiPlagtUnDVmi11QBYzAdBgNVHQ4EFgQUzxJh
/jofpnk51YYuLgMtawy227swCgYIKoZIzj0EAwIDSQAwRgIhAI5LB4GFCUla+JWk
zBrEANAX1cC2M7VYjV2wQ/KTD016AiEA/uFU2l+KFRu8s975/6453R51yP5NggiE
2Qha7ELC75U=
-----END CERTIFICATE-----
"""

    static let serverKeyPEM = """
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQger0KL9/bZDLOm1B5
MYXJPcE4uW9TjdJJ3nhvS8RQn/uhRANCAARrlxZFq+BQBg60I6cUf6SJiLSnCiMb
E+oItZ2mOUIjEBcQzUNwpv14mEpaO6m84S7kNlUhk8UqL8Gej5Aylt16
-----END PRIVATE KEY-----
"""

    /// The server side: the certificate and its key.
    static func serverConfiguration() throws -> TLSConfiguration {
        let certificate = try NIOSSLCertificate(bytes: Array(serverCertificatePEM.utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(serverKeyPEM.utf8), format: .pem)
        return TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)],
                                                        privateKey: .privateKey(key))
    }

    /// Writes `text` to a new file in the temporary directory and returns its path.
    static func temporaryFile(_ text: String, name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("llamaclient-\(UUID().uuidString)-\(name)").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }
}
