// Ed25519 private keys and signers (OpenSSL 3), and key generation. Public keys are read by the
// runtime (hotforge/core/unit_reader.h).
#include "hotforge/core/error.h"
#include "hotforge/core/openssl_keys.h"
#include "hotforge/unit.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace hotforge {
namespace {

using openssl::Bio;
using openssl::MdCtx;
using openssl::Pkey;

bool looksEncrypted(llvm::StringRef pem) { return pem.contains("ENCRYPTED"); }

llvm::Expected<Pkey> parsePrivateKeyPem(llvm::StringRef pem, const std::string &name) {
  if (pem.empty()) return formatError("{}: the file is empty, not a PEM private key", name);
  if (pem.size() > openssl::kMaxPemSize) return formatError("{}: too large for a PEM key file", name);
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return formatError("{}: {}", name, openssl::lastError());
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, openssl::noPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    if (looksEncrypted(pem))
      return formatError("{}: the private key is encrypted; Hotforge does not ask for passphrases. Decrypt a copy "
                         "(`openssl pkey -in KEY -out PLAIN.pem`) or sign through --sign-cmd",
                         name);
    if (pem.contains("BEGIN PUBLIC KEY"))
      return formatError("{}: this is a public key; signing needs the private key (NAME.pem, not NAME.pub.pem)", name);
    return formatError("{}: not a PEM private key (expected \"BEGIN PRIVATE KEY\", as `openssl genpkey -algorithm "
                       "ed25519` and `hotforge keygen` write)",
                       name);
  }
  if (Outcome<PublicKey> check = openssl::rawPublicKey(key.get(), name); !check) return makeError(check.error());
  return key;
}

llvm::Expected<std::array<uint8_t, 64>> signWith(EVP_PKEY *key, llvm::ArrayRef<uint8_t> message) {
  MdCtx ctx(EVP_MD_CTX_new());
  std::array<uint8_t, 64> signature{};
  size_t length = signature.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), signature.data(), &length, message.data(), message.size()) != 1 ||
      length != signature.size())
    return formatError("Ed25519 signing failed: {}", openssl::lastError());
  return signature;
}

class KeySigner final : public Signer {
public:
  KeySigner(Pkey key, PublicKey publicKey) : key_(std::move(key)), public_(publicKey) {}
  const PublicKey &publicKey() const override { return public_; }
  llvm::Expected<std::array<uint8_t, 64>> sign(llvm::ArrayRef<uint8_t> message) override {
    return signWith(key_.get(), message);
  }

private:
  Pkey key_;
  PublicKey public_;
};

llvm::Expected<std::unique_ptr<Signer>> signerFromKey(Pkey key, const std::string &name) {
  llvm::Expected<PublicKey> publicKey = lift(openssl::rawPublicKey(key.get(), name));
  if (!publicKey) return publicKey.takeError();
  return std::make_unique<KeySigner>(std::move(key), *publicKey);
}

// Runs `command` via /bin/sh -c: stdin from a regular file holding `input` (so `openssl pkeyutl
// -rawin -in /dev/stdin` can learn its size), stdout captured, stderr passed through.
struct CommandOutput {
  std::string head;  // the first 4 KiB of stdout
  size_t total = 0;  // how many bytes it wrote in all
};

llvm::Expected<CommandOutput> runWithInput(const std::string &command, llvm::ArrayRef<uint8_t> input) {
  const char *tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/hotforge-sign-XXXXXX";
  std::vector<char> path(pattern.begin(), pattern.end());
  path.push_back(0);
  int in = mkostemp(path.data(), O_CLOEXEC);
  if (in < 0) return formatError("--sign-cmd: cannot create a temporary file in {}: {}", pattern, std::strerror(errno));
  unlink(path.data());  // the descriptor keeps it alive; nothing is left behind
  for (size_t done = 0; done < input.size();) {
    ssize_t n = write(in, input.data() + done, input.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int saved = errno;
      close(in);
      return formatError("--sign-cmd: cannot write the message to sign: {}", std::strerror(saved));
    }
    done += static_cast<size_t>(n);
  }
  lseek(in, 0, SEEK_SET);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    int saved = errno;
    close(in);
    return formatError("--sign-cmd: pipe: {}", std::strerror(saved));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::string shell = "/bin/sh", dashC = "-c", script = command;
  char *argv[] = {shell.data(), dashC.data(), script.data(), nullptr};
  pid_t pid = 0;
  int spawned = posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return formatError("--sign-cmd: cannot run /bin/sh: {}", std::strerror(spawned));
  }
  CommandOutput output;
  constexpr size_t kKeep = 4096;  // a signature is 64 bytes; drain the rest so the child can finish
  char buffer[4096];
  for (;;) {
    ssize_t n = read(out[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.total += static_cast<size_t>(n);
    if (output.head.size() < kKeep)
      output.head.append(buffer, std::min<size_t>(static_cast<size_t>(n), kKeep - output.head.size()));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) return formatError("--sign-cmd was killed by signal {}", WTERMSIG(status));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return formatError("--sign-cmd failed with exit code {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return output;
}

class CommandSigner final : public Signer {
public:
  CommandSigner(std::string command, PublicKey key) : command_(std::move(command)), public_(key) {}
  const PublicKey &publicKey() const override { return public_; }
  llvm::Expected<std::array<uint8_t, 64>> sign(llvm::ArrayRef<uint8_t> message) override {
    llvm::Expected<CommandOutput> output = runWithInput(command_, message);
    if (!output) return output.takeError();
    std::array<uint8_t, 64> signature{};
    if (output->total != signature.size())
      return formatError("--sign-cmd wrote {} bytes to stdout; it must write exactly the raw 64-byte Ed25519 "
                         "signature (e.g. `openssl pkeyutl -sign -inkey KEY.pem -rawin -in /dev/stdin`)",
                         output->total);
    std::memcpy(signature.data(), output->head.data(), signature.size());
    if (!verifySignature(public_, message, signature))
      return formatError("--sign-cmd returned a signature that does not verify with the public key {} (wrong key, or "
                         "a faulty signer); nothing was written",
                         public_.fingerprint());
    return signature;
  }

private:
  std::string command_;
  PublicKey public_;
};

}  // namespace

llvm::Expected<std::unique_ptr<Signer>> makeKeyFileSigner(const std::string &path) {
  Outcome<RegularFile> file = RegularFile::open(path, kMaxKeyFileSize);
  if (!file) return makeError(file.error());
  llvm::Expected<std::vector<uint8_t>> bytes = lift(file->read(file->size()));
  if (!bytes) return bytes.takeError();
  llvm::Expected<Pkey> key =
      parsePrivateKeyPem(llvm::StringRef(reinterpret_cast<const char *>(bytes->data()), bytes->size()), path);
  OPENSSL_cleanse(bytes->data(), bytes->size());
  if (!key) return key.takeError();
  // As ssh does: a private key others can read may already be someone else's, so it signs nothing.
  if (file->mode() & 077)
    return formatError("{}: the private key is open to group or others (mode {:04o}); refused: `chmod 600 {}`", path,
                       file->mode(), path);
  return signerFromKey(std::move(*key), path);
}

llvm::Expected<std::unique_ptr<Signer>> makeSeedSigner(const std::array<uint8_t, 32> &seed) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  if (!key) return formatError("Ed25519 key from seed: {}", openssl::lastError());
  return signerFromKey(std::move(key), "seed key");
}

std::unique_ptr<Signer> makeCommandSigner(std::string command, PublicKey expectedKey) {
  return std::make_unique<CommandSigner>(std::move(command), expectedKey);
}

llvm::Expected<KeyFiles> generateKeyFiles(const std::string &name) {
  if (name.empty()) return makeError("keygen: the key name is empty");
  KeyFiles files;
  files.privatePath = name + ".pem";
  files.publicPath = name + ".pub.pem";
  for (const std::string &path : {files.privatePath, files.publicPath}) {
    struct stat st;
    if (lstat(path.c_str(), &st) == 0)
      return formatError("{} already exists; Hotforge never overwrites a key (choose another name or move it away)",
                         path);
  }
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return formatError("keygen: {}", openssl::lastError());
  llvm::Expected<PublicKey> publicKey = lift(openssl::rawPublicKey(key.get(), "generated key"));
  if (!publicKey) return publicKey.takeError();
  files.publicKey = *publicKey;

  auto pemOf = [](EVP_PKEY *k, bool isPrivate) -> llvm::Expected<std::vector<uint8_t>> {
    Bio bio(BIO_new(BIO_s_mem()));
    int ok = bio ? (isPrivate ? PEM_write_bio_PKCS8PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr)
                              : PEM_write_bio_PUBKEY(bio.get(), k))
                 : 0;
    if (ok != 1) return formatError("keygen: cannot encode the key: {}", openssl::lastError());
    char *data = nullptr;
    long length = BIO_get_mem_data(bio.get(), &data);
    std::vector<uint8_t> out(data, data + length);
    if (isPrivate) OPENSSL_cleanse(data, static_cast<size_t>(length));
    return out;
  };
  llvm::Expected<std::vector<uint8_t>> privatePem = pemOf(key.get(), true);
  if (!privatePem) return privatePem.takeError();
  llvm::Expected<std::vector<uint8_t>> publicPem = pemOf(key.get(), false);
  if (!publicPem) return publicPem.takeError();

  llvm::Error written = writeFileAtomically(files.privatePath, *privatePem, 0600, /*replace=*/false);
  OPENSSL_cleanse(privatePem->data(), privatePem->size());
  if (written) return written;
  if (llvm::Error e = writeFileAtomically(files.publicPath, *publicPem, 0644, /*replace=*/false)) {
    unlink(files.privatePath.c_str());  // we made it a moment ago: no half key pair
    return e;
  }
  return files;
}

}  // namespace hotforge
