// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {IKeyRegistry} from "./IKeyRegistry.sol";

/// @title anchormq key registry
/// @notice See IKeyRegistry for the behaviour. Storage is laid out so that no state-changing function loops over
/// a group's members or a node's groups: every call touches a fixed number of slots whatever the group size or
/// the number of groups a node is in. The only loop is createGroup's check of its own topic filter argument.
/// @dev No immutables: the runtime code is the same on every chain and address (the operator given to the
/// constructor lives in storage), which lets tests compare a deployed fixture's code hash with the compiled one.
contract KeyRegistry is IKeyRegistry {
    /// @inheritdoc IKeyRegistry
    bytes32 public constant NODE_KEY_TYPEHASH =
        keccak256("NodeKey(bytes32 nodeId,address owner,bytes publicKey,uint32 keyVersion)");
    /// @inheritdoc IKeyRegistry
    uint256 public constant MAX_TOPIC_FILTER_LENGTH = 1024;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    string private constant DOMAIN_NAME = "anchormq KeyRegistry";
    string private constant DOMAIN_VERSION = "1";

    /// secp256k1 field prime.
    uint256 private constant P = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f;
    /// (P + 1) / 4: since P = 3 mod 4, a^((P+1)/4) is a square root of a whenever one exists.
    uint256 private constant SQRT_EXPONENT =
        0x3fffffffffffffffffffffffffffffffffffffffffffffffffffffffbfffff0c;
    /// secp256k1 group order / 2: larger s values are the malleable twins of valid signatures.
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    /// Member roles READ (1) | WRITE (2): what `addMember` gives.
    uint8 private constant ALL_ROLES = 3;

    /// One slot: 20 + 4 + 1 + 1 bytes. The key's x coordinate lives in `_keyX`.
    struct NodeRecord {
        address owner;
        uint32 keyVersion;
        NodeStatus status;
        uint8 keyPrefix;
    }

    /// One slot: 20 + 8 + 4 bytes. A group exists iff its admin is non-zero.
    struct GroupRecord {
        address admin;
        uint64 epoch;
        uint32 memberCount;
    }

    mapping(bytes32 nodeId => NodeRecord) private _nodes;
    mapping(bytes32 nodeId => bytes32) private _keyX;
    /// Pending ownership offers; only written by transfers, so no other call pays for the slot.
    mapping(bytes32 nodeId => address) private _pendingOwners;
    mapping(bytes32 groupId => GroupRecord) private _groups;
    mapping(bytes32 groupId => string) private _topicFilters;
    mapping(bytes32 groupId => address) private _pendingAdmins;
    /// Members by position 0..memberCount-1 (the length lives in GroupRecord, saving a slot per add).
    mapping(bytes32 groupId => mapping(uint256 position => bytes32 nodeId)) private _memberAt;
    /// position + 1 of a member, 0 when not a member: O(1) membership checks and swap-and-pop removal.
    mapping(bytes32 groupId => mapping(bytes32 nodeId => uint256)) private _positionPlusOne;
    /// Node owner => admin => whether the admin may add the owner's nodes to its groups.
    mapping(address owner => mapping(address admin => bool)) private _adminApproved;

    /// Zero for an open registry; once non-zero it never returns to zero (a transfer needs an acceptor).
    address private _operator;
    address private _pendingOperator;
    mapping(address account => bool) private _registrars;

    /// The roles a member does NOT have (0: both), so a plain add writes nothing here. Cleared on removal.
    /// Declared last so that the earlier variables keep their slots.
    mapping(bytes32 groupId => mapping(bytes32 nodeId => uint8 roles)) private _withheldRoles;

    /// @param operator_ Zero deploys an open registry (anyone registers nodes and creates groups, for good);
    /// any other account becomes the operator of a closed registry, which starts with no registrar.
    constructor(address operator_) {
        if (operator_ != address(0)) {
            _operator = operator_;
            emit OperatorTransferred(address(0), operator_);
        }
    }

    // ------------------------------------------------------------------ nodes

    /// @inheritdoc IKeyRegistry
    function registerNode(bytes32 nodeId, bytes calldata publicKey, bytes calldata signature) external {
        _checkRegistrar();
        _registerNode(nodeId, publicKey, signature);
    }

    /// @inheritdoc IKeyRegistry
    function registerNodes(
        bytes32[] calldata nodeIds,
        bytes[] calldata publicKeys,
        bytes[] calldata signatures
    ) external {
        _checkRegistrar();
        if (nodeIds.length == 0) revert EmptyNodeList();
        if (publicKeys.length != nodeIds.length || signatures.length != nodeIds.length) {
            revert BatchLengthMismatch(nodeIds.length, publicKeys.length, signatures.length);
        }
        for (uint256 i; i < nodeIds.length; ++i) {
            _registerNode(nodeIds[i], publicKeys[i], signatures[i]);
        }
    }

    /// @inheritdoc IKeyRegistry
    function rotateKey(bytes32 nodeId, bytes calldata newPublicKey, bytes calldata signature) external {
        NodeRecord memory node = _ownedActiveNode(nodeId);
        uint32 keyVersion = node.keyVersion + 1;
        (uint8 prefix, bytes32 x) = _verifyNodeKey(nodeId, msg.sender, newPublicKey, keyVersion, signature);
        if (prefix == node.keyPrefix && x == _keyX[nodeId]) revert PublicKeyUnchanged(nodeId);

        node.keyVersion = keyVersion;
        node.keyPrefix = prefix;
        _nodes[nodeId] = node;
        _keyX[nodeId] = x;
        emit NodeKeyRotated(nodeId, newPublicKey, keyVersion, msg.sender);
    }

    /// @inheritdoc IKeyRegistry
    function revokeNode(bytes32 nodeId) external {
        NodeRecord memory node = _ownedActiveNode(nodeId);
        node.status = NodeStatus.Revoked;
        _nodes[nodeId] = node;
        // A pending offer stays on record (no state changes without its event) but can no longer be accepted.
        emit NodeRevoked(nodeId, msg.sender);
    }

    /// @inheritdoc IKeyRegistry
    function transferNodeOwnership(bytes32 nodeId, address newOwner) external {
        _ownedActiveNode(nodeId);
        _pendingOwners[nodeId] = newOwner;
        emit NodeOwnershipTransferStarted(nodeId, msg.sender, newOwner);
    }

    /// @inheritdoc IKeyRegistry
    function acceptNodeOwnership(bytes32 nodeId) external {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
        address pendingOwner = _pendingOwners[nodeId];
        if (pendingOwner == address(0) || pendingOwner != msg.sender) {
            revert NotPendingNodeOwner(nodeId, msg.sender);
        }

        _nodes[nodeId].owner = msg.sender;
        delete _pendingOwners[nodeId];
        emit NodeOwnershipTransferred(nodeId, node.owner, msg.sender);
    }

    /// @inheritdoc IKeyRegistry
    function setAdminApproval(address admin, bool approved) external {
        if (admin == address(0)) revert ZeroAddress();
        _adminApproved[msg.sender][admin] = approved;
        emit AdminApprovalSet(msg.sender, admin, approved);
    }

    // ------------------------------------------------------------------ groups

    /// @inheritdoc IKeyRegistry
    function createGroup(bytes32 groupId, string calldata topicFilter) external {
        _checkRegistrar();
        if (groupId == bytes32(0)) revert ZeroId();
        if (_groups[groupId].admin != address(0)) revert GroupAlreadyExists(groupId);
        uint256 length = _checkTopicFilter(bytes(topicFilter));

        _groups[groupId] = GroupRecord({admin: msg.sender, epoch: 0, memberCount: 0});
        if (length != 0) _topicFilters[groupId] = topicFilter;
        emit GroupCreated(groupId, msg.sender, topicFilter);
    }

    /// @inheritdoc IKeyRegistry
    function transferGroupAdmin(bytes32 groupId, address newAdmin) external {
        _adminGroup(groupId);
        _pendingAdmins[groupId] = newAdmin;
        emit GroupAdminTransferStarted(groupId, msg.sender, newAdmin);
    }

    /// @inheritdoc IKeyRegistry
    function acceptGroupAdmin(bytes32 groupId) external {
        address previousAdmin = _groups[groupId].admin;
        if (previousAdmin == address(0)) revert GroupNotFound(groupId);
        address pendingAdmin = _pendingAdmins[groupId];
        if (pendingAdmin == address(0) || pendingAdmin != msg.sender) {
            revert NotPendingGroupAdmin(groupId, msg.sender);
        }

        _groups[groupId].admin = msg.sender;
        delete _pendingAdmins[groupId];
        emit GroupAdminTransferred(groupId, previousAdmin, msg.sender);
    }

    /// @inheritdoc IKeyRegistry
    function addMember(bytes32 groupId, bytes32 nodeId) external {
        GroupRecord memory group = _adminGroup(groupId);
        uint64 epoch;
        // uint32/uint64 counters cannot realistically overflow: every increment is a paid transaction.
        unchecked {
            epoch = group.epoch + 1;
        }
        _addMember(groupId, group, nodeId, epoch);
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    /// @inheritdoc IKeyRegistry
    function addMembers(bytes32 groupId, bytes32[] calldata nodeIds) external {
        GroupRecord memory group = _adminGroup(groupId);
        if (nodeIds.length == 0) revert EmptyNodeList();
        uint64 epoch;
        unchecked {
            epoch = group.epoch + 1;
        }
        for (uint256 i; i < nodeIds.length; ++i) {
            _addMember(groupId, group, nodeIds[i], epoch);
        }
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    /// @inheritdoc IKeyRegistry
    function removeMember(bytes32 groupId, bytes32 nodeId) external {
        _adminGroup(groupId);
        _removeMember(groupId, nodeId);
    }

    /// @inheritdoc IKeyRegistry
    function removeMembers(bytes32 groupId, bytes32[] calldata nodeIds) external {
        GroupRecord memory group = _adminGroup(groupId);
        if (nodeIds.length == 0) revert EmptyNodeList();
        uint64 epoch;
        unchecked {
            epoch = group.epoch + 1;
        }
        for (uint256 i; i < nodeIds.length; ++i) {
            _unlinkMember(groupId, group, nodeIds[i]);
            emit MemberRemoved(groupId, nodeIds[i], epoch, msg.sender);
        }
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    /// @inheritdoc IKeyRegistry
    function leaveGroup(bytes32 groupId, bytes32 nodeId) external {
        if (_groups[groupId].admin == address(0)) revert GroupNotFound(groupId);
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.owner != msg.sender) revert NotNodeOwner(nodeId, msg.sender);
        _removeMember(groupId, nodeId);
    }

    /// @inheritdoc IKeyRegistry
    function addMembersWithRoles(bytes32 groupId, bytes32[] calldata nodeIds, uint8 roles) external {
        (GroupRecord memory group, uint64 epoch, uint8 withheld) = _rolesBatch(groupId, nodeIds, roles);
        for (uint256 i; i < nodeIds.length; ++i) {
            bytes32 nodeId = nodeIds[i];
            _addMember(groupId, group, nodeId, epoch);
            // A new member's entry is 0 (removal clears it): only fewer roles than both need a write.
            if (withheld != 0) {
                _withheldRoles[groupId][nodeId] = withheld;
                emit MemberRolesSet(groupId, nodeId, roles, epoch, msg.sender);
            }
        }
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    /// @inheritdoc IKeyRegistry
    function setMemberRoles(bytes32 groupId, bytes32[] calldata nodeIds, uint8 roles) external {
        (GroupRecord memory group, uint64 epoch, uint8 withheld) = _rolesBatch(groupId, nodeIds, roles);
        for (uint256 i; i < nodeIds.length; ++i) {
            bytes32 nodeId = nodeIds[i];
            if (_positionPlusOne[groupId][nodeId] == 0) revert NotMember(groupId, nodeId);
            uint8 previous = _withheldRoles[groupId][nodeId];
            // A role withheld until now is granted: that needs the consent an add needs. Dropping roles needs
            // none, since the admin may remove the member outright.
            if (previous & ~withheld != 0) _checkGrant(nodeId);
            if (previous != withheld) _withheldRoles[groupId][nodeId] = withheld;
            emit MemberRolesSet(groupId, nodeId, roles, epoch, msg.sender);
        }
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    // ------------------------------------------------------------------ closed registries

    /// @inheritdoc IKeyRegistry
    function setRegistrar(address registrar, bool allowed) external {
        _checkOperator();
        if (registrar == address(0)) revert ZeroAddress();
        _registrars[registrar] = allowed;
        emit RegistrarSet(registrar, allowed);
    }

    /// @inheritdoc IKeyRegistry
    function transferOperator(address newOperator) external {
        _checkOperator();
        _pendingOperator = newOperator;
        emit OperatorTransferStarted(msg.sender, newOperator);
    }

    /// @inheritdoc IKeyRegistry
    function acceptOperator() external {
        // An open registry never has a pending operator: nobody can offer the role there.
        address pending = _pendingOperator;
        if (pending == address(0) || pending != msg.sender) revert NotPendingOperator(msg.sender);
        address previousOperator = _operator;
        _operator = msg.sender;
        delete _pendingOperator;
        emit OperatorTransferred(previousOperator, msg.sender);
    }

    // ------------------------------------------------------------------ queries

    /// @inheritdoc IKeyRegistry
    function getNode(bytes32 nodeId) external view returns (Node memory) {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        return Node({
            owner: node.owner,
            keyVersion: node.keyVersion,
            status: node.status,
            pendingOwner: _pendingOwners[nodeId],
            publicKey: abi.encodePacked(node.keyPrefix, _keyX[nodeId])
        });
    }

    /// @inheritdoc IKeyRegistry
    function getGroup(bytes32 groupId) external view returns (Group memory) {
        GroupRecord memory group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        return Group({
            admin: group.admin,
            epoch: group.epoch,
            memberCount: group.memberCount,
            pendingAdmin: _pendingAdmins[groupId],
            topicFilter: _topicFilters[groupId]
        });
    }

    /// @inheritdoc IKeyRegistry
    function isMember(bytes32 groupId, bytes32 nodeId) external view returns (bool) {
        return _positionPlusOne[groupId][nodeId] != 0;
    }

    /// @inheritdoc IKeyRegistry
    function memberRoles(bytes32 groupId, bytes32 nodeId) external view returns (uint8) {
        if (_positionPlusOne[groupId][nodeId] == 0) return 0;
        return ALL_ROLES ^ _withheldRoles[groupId][nodeId];
    }

    /// @inheritdoc IKeyRegistry
    function groupMembers(bytes32 groupId, uint256 offset, uint256 limit)
        external
        view
        returns (bytes32[] memory members)
    {
        GroupRecord memory group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        uint256 count = group.memberCount;
        if (offset >= count) return new bytes32[](0);
        if (limit > count - offset) limit = count - offset;
        members = new bytes32[](limit);
        for (uint256 i; i < limit; ++i) {
            members[i] = _memberAt[groupId][offset + i];
        }
    }

    /// @inheritdoc IKeyRegistry
    function isAdminApproved(address owner, address admin) external view returns (bool) {
        return _adminApproved[owner][admin];
    }

    /// @inheritdoc IKeyRegistry
    function operator() external view returns (address) {
        return _operator;
    }

    /// @inheritdoc IKeyRegistry
    function pendingOperator() external view returns (address) {
        return _pendingOperator;
    }

    /// @inheritdoc IKeyRegistry
    function isRegistrar(address account) public view returns (bool) {
        return _operator == address(0) || _registrars[account];
    }

    /// @inheritdoc IKeyRegistry
    function nodeKeyDigest(bytes32 nodeId, address owner, bytes calldata publicKey, uint32 keyVersion)
        external
        view
        returns (bytes32)
    {
        return _nodeKeyDigest(nodeId, owner, publicKey, keyVersion);
    }

    /// @inheritdoc IKeyRegistry
    function domainSeparator() public view returns (bytes32) {
        // Computed on every call rather than cached in an immutable: keeps the runtime code address-free.
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256(bytes(DOMAIN_NAME)),
                keccak256(bytes(DOMAIN_VERSION)),
                block.chainid,
                address(this)
            )
        );
    }

    /// @inheritdoc IKeyRegistry
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (
            hex"0f", DOMAIN_NAME, DOMAIN_VERSION, block.chainid, address(this), bytes32(0), new uint256[](0)
        );
    }

    // ------------------------------------------------------------------ internals

    function _checkRegistrar() private view {
        if (!isRegistrar(msg.sender)) revert NotRegistrar(msg.sender);
    }

    function _checkOperator() private view {
        // An open registry has no operator: the zero address is not one.
        address operator_ = _operator;
        if (operator_ == address(0) || operator_ != msg.sender) revert NotOperator(msg.sender);
    }

    function _ownedActiveNode(bytes32 nodeId) private view returns (NodeRecord memory node) {
        node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.owner != msg.sender) revert NotNodeOwner(nodeId, msg.sender);
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
    }

    function _adminGroup(bytes32 groupId) private view returns (GroupRecord memory group) {
        group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        if (group.admin != msg.sender) revert NotGroupAdmin(groupId, msg.sender);
    }

    /// The checks and prologue the two roles batches share: the group the caller administers, its next epoch
    /// (the caller stores it), and the roles withheld from members set to `roles`.
    function _rolesBatch(bytes32 groupId, bytes32[] calldata nodeIds, uint8 roles)
        private
        view
        returns (GroupRecord memory group, uint64 epoch, uint8 withheld)
    {
        group = _adminGroup(groupId);
        if (roles == 0 || roles > ALL_ROLES) revert InvalidRoles(roles);
        if (nodeIds.length == 0) revert EmptyNodeList();
        unchecked {
            epoch = group.epoch + 1;
        }
        withheld = ALL_ROLES ^ roles;
    }

    /// Returns the filter's length if it is a valid MQTT topic filter of printable ASCII, else reverts with the
    /// first offending byte: outside 0x20-0x7e, a '+' that is not a whole level, a '#' that is not the whole
    /// last level. One pass over calldata in assembly (about a quarter of the gas of the same loop over
    /// `filter[i]`); each wildcard looks at its two neighbours only.
    function _checkTopicFilter(bytes calldata filter) private pure returns (uint256 length) {
        length = filter.length;
        if (length > MAX_TOPIC_FILTER_LENGTH) revert TopicFilterTooLong(length, MAX_TOPIC_FILTER_LENGTH);
        uint256 invalidPlusOne; // index + 1 of the first offending byte; 0 when there is none
        assembly ("memory-safe") {
            let end := add(filter.offset, length)
            // The byte before the current one; '/' at the start, which is where a level begins too.
            let previous := 0x2f
            for { let p := filter.offset } lt(p, end) { p := add(p, 1) } {
                let b := byte(0, calldataload(p))
                // Below 0x20, sub wraps around to a huge number: one comparison covers both bounds.
                let bad := iszero(lt(sub(b, 0x20), 0x5f))
                // '+' fills its level: '/' (or the start) before it, '/' (or the end) after it.
                if eq(b, 0x2b) {
                    let next := add(p, 1)
                    bad := or(
                        iszero(eq(previous, 0x2f)),
                        and(lt(next, end), iszero(eq(byte(0, calldataload(next)), 0x2f)))
                    )
                }
                // '#' fills the last level: '/' (or the start) before it, and nothing after it.
                if eq(b, 0x23) { bad := or(iszero(eq(previous, 0x2f)), lt(add(p, 1), end)) }
                if bad {
                    invalidPlusOne := add(sub(p, filter.offset), 1)
                    break
                }
                previous := b
            }
        }
        if (invalidPlusOne != 0) revert InvalidTopicFilter(invalidPlusOne - 1);
    }

    function _registerNode(bytes32 nodeId, bytes calldata publicKey, bytes calldata signature) private {
        if (nodeId == bytes32(0)) revert ZeroId();
        if (_nodes[nodeId].status != NodeStatus.None) revert NodeAlreadyRegistered(nodeId);
        (uint8 prefix, bytes32 x) = _verifyNodeKey(nodeId, msg.sender, publicKey, 1, signature);

        _nodes[nodeId] =
            NodeRecord({owner: msg.sender, keyVersion: 1, status: NodeStatus.Active, keyPrefix: prefix});
        _keyX[nodeId] = x;
        emit NodeRegistered(nodeId, msg.sender, publicKey, 1);
    }

    /// Appends an active node to `group` (in memory; the caller stores it) with the owner's consent.
    function _addMember(bytes32 groupId, GroupRecord memory group, bytes32 nodeId, uint64 epoch) private {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
        // Consent: an admin that owns the node needs nothing more (and pays no extra slot read).
        if (node.owner != msg.sender && !_adminApproved[node.owner][msg.sender]) {
            revert AdminNotApproved(nodeId, node.owner, msg.sender);
        }
        if (_positionPlusOne[groupId][nodeId] != 0) revert AlreadyMember(groupId, nodeId);

        uint32 count = group.memberCount;
        _memberAt[groupId][count] = nodeId;
        _positionPlusOne[groupId][nodeId] = uint256(count) + 1;
        unchecked {
            group.memberCount = count + 1;
        }
        emit MemberAdded(groupId, nodeId, epoch, msg.sender);
    }

    /// Granting a role needs what `_addMember` checks of a node (a member's node is registered): it is active
    /// and its owner consents to the caller as admin. `_addMember` keeps its own copy of these lines: a call
    /// to this function would cost every added node 10-20 gas.
    function _checkGrant(bytes32 nodeId) private view {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
        if (node.owner != msg.sender && !_adminApproved[node.owner][msg.sender]) {
            revert AdminNotApproved(nodeId, node.owner, msg.sender);
        }
    }

    /// Swap-and-pop removal of a member the caller's checks allow to go; bumps the epoch and emits.
    function _removeMember(bytes32 groupId, bytes32 nodeId) private {
        GroupRecord memory group = _groups[groupId];
        uint64 epoch;
        unchecked {
            epoch = group.epoch + 1;
        }
        _unlinkMember(groupId, group, nodeId);
        group.epoch = epoch;
        _groups[groupId] = group;
        emit MemberRemoved(groupId, nodeId, epoch, msg.sender);
    }

    /// Takes a member out of `group` (in memory; the caller stores it): swap and pop.
    function _unlinkMember(bytes32 groupId, GroupRecord memory group, bytes32 nodeId) private {
        uint256 positionPlusOne = _positionPlusOne[groupId][nodeId];
        if (positionPlusOne == 0) revert NotMember(groupId, nodeId);
        uint256 last;
        unchecked {
            // The node is a member, so memberCount >= 1 and positionPlusOne >= 1.
            last = uint256(group.memberCount) - 1;
            uint256 position = positionPlusOne - 1;
            if (position != last) {
                bytes32 moved = _memberAt[groupId][last];
                _memberAt[groupId][position] = moved;
                _positionPlusOne[groupId][moved] = positionPlusOne;
            }
        }
        delete _memberAt[groupId][last];
        delete _positionPlusOne[groupId][nodeId];
        // Roles belong to this membership: a later add starts again with both. Read first: it is almost
        // always 0 already, and writing 0 over 0 costs more than the check.
        if (_withheldRoles[groupId][nodeId] != 0) delete _withheldRoles[groupId][nodeId];
        // casting to 'uint32' is safe because last < memberCount, itself a uint32.
        // forge-lint: disable-next-line(unsafe-typecast)
        group.memberCount = uint32(last);
    }

    function _nodeKeyDigest(bytes32 nodeId, address owner, bytes calldata publicKey, uint32 keyVersion)
        private
        view
        returns (bytes32)
    {
        bytes32 structHash =
            keccak256(abi.encode(NODE_KEY_TYPEHASH, nodeId, owner, keccak256(publicKey), keyVersion));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// Validates the key and checks that `signature` proves possession of it for (nodeId, owner, keyVersion).
    function _verifyNodeKey(
        bytes32 nodeId,
        address owner,
        bytes calldata publicKey,
        uint32 keyVersion,
        bytes calldata signature
    ) private view returns (uint8 prefix, bytes32 x) {
        address keyAddress;
        (prefix, x, keyAddress) = _decompress(publicKey);

        if (signature.length != 65) revert InvalidSignatureLength(signature.length);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 2) v += 27; // accept the raw recovery id (0/1) as well as 27/28
        if (v != 27 && v != 28) revert InvalidSignatureV(uint8(signature[64]));
        if (uint256(s) > HALF_N) revert SignatureMalleable(s);

        address recovered = ecrecover(_nodeKeyDigest(nodeId, owner, publicKey, keyVersion), v, r, s);
        if (recovered != keyAddress) revert InvalidSignature(keyAddress, recovered);
    }

    /// Parses a compressed key and returns its prefix, x and Ethereum address (keccak256(x || y)[12:]).
    function _decompress(bytes calldata publicKey)
        private
        view
        returns (uint8 prefix, bytes32 x, address keyAddress)
    {
        if (publicKey.length != 33) revert InvalidPublicKeyLength(publicKey.length);
        prefix = uint8(publicKey[0]);
        if (prefix != 2 && prefix != 3) revert InvalidPublicKeyPrefix(prefix);
        x = bytes32(publicKey[1:33]);
        uint256 xn = uint256(x);
        if (xn >= P) revert PublicKeyXOutOfRange(x);

        uint256 rhs = addmod(mulmod(mulmod(xn, xn, P), xn, P), 7, P);
        uint256 y = _modexp(rhs, SQRT_EXPONENT, P);
        if (mulmod(y, y, P) != rhs) revert PublicKeyNotOnCurve(x);
        // y != 0 on secp256k1 (no point of order 2), so P - y stays in range.
        if (y & 1 != prefix & 1) y = P - y;
        keyAddress = address(uint160(uint256(keccak256(abi.encodePacked(x, y)))));
    }

    /// base^exponent mod modulus through the modexp precompile (address 0x05).
    function _modexp(uint256 base, uint256 exponent, uint256 modulus) private view returns (uint256 result) {
        assembly ("memory-safe") {
            let input := mload(0x40)
            mstore(input, 0x20)
            mstore(add(input, 0x20), 0x20)
            mstore(add(input, 0x40), 0x20)
            mstore(add(input, 0x60), base)
            mstore(add(input, 0x80), exponent)
            mstore(add(input, 0xa0), modulus)
            if iszero(staticcall(gas(), 0x05, input, 0xc0, input, 0x20)) { revert(0, 0) }
            result := mload(input)
        }
    }
}
